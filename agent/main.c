#include <stdio.h>
int main(void)
{
    puts("lunaroute-agent: not built yet");
    return 1;
}
