#include "spop.h"
