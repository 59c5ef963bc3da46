/* SHA-256 (FIPS 180-4), small and dependency-free: the digests `status` reports for
 * agent.json and the rendered files, comparable with `sha256sum`. */
#ifndef LR_SHA256_H
#define LR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define LR_SHA256_HEX_LEN 64 /* + 1 for the NUL */

struct lr_sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes in block */
};

void lr_sha256_init(struct lr_sha256 *c);
void lr_sha256_update(struct lr_sha256 *c, const void *data, size_t len);
void lr_sha256_final(struct lr_sha256 *c, uint8_t out[32]);
/* One shot: lowercase hex digest of data into hex (LR_SHA256_HEX_LEN + 1 bytes). */
void lr_sha256_hex(const void *data, size_t len, char hex[LR_SHA256_HEX_LEN + 1]);

#endif
