#include <stdio.h>
int main(void)
{
    puts("lunaroute-control: not built yet");
    return 1;
}
