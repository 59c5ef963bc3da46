/* model_pattern regexes: glibc's regcomp expands every `+` and `{n,m}` by copying the tree
 * it applies to, so a short pattern like `a+++…+` (40 bytes) or `((a{9}){9}){9}` needs
 * gigabytes to compile (found by fuzz_config). lr_regex_compile() estimates that expansion
 * from the pattern's text before calling regcomp and refuses patterns over a budget. */
#ifndef LR_REGEX_H
#define LR_REGEX_H

#include <regex.h>
#include <stddef.h>

#define LR_REGEX_MAX_LEN  1024u /* bytes of pattern */
#define LR_REGEX_MAX_COST 4096u /* estimated atoms after expansion */

/* Estimated number of atoms regcomp builds for an extended regex (saturates above
 * LR_REGEX_MAX_COST + 1). Pure. */
size_t lr_regex_cost(const char *pattern);

/* Checks length and cost, then regcomp(re, pattern, flags). 0 with *re to regfree, or -1
 * with the reason in err (nothing to free). */
int lr_regex_compile(regex_t *re, const char *pattern, int flags, char *err, size_t errlen);

#endif
