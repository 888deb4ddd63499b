/* uvm_codec.h: inflate + hash (and deflate + hash) of CernVM-FS objects.
 *
 * The only declarations Python sees (native/build.py feeds this file to
 * cffi's cdef).  Every function works on caller-owned state: no globals, so
 * any number of threads may run codecs at once.  Return values are
 * CODEC_* status codes; uvm/_native.py maps them onto DecodeFailure.
 */

#include <stddef.h>

#define CODEC_OK 0
#define CODEC_TRUNCATED 1
#define CODEC_CORRUPT 2
#define CODEC_TRAILING_GARBAGE 3
#define CODEC_HASH_MISMATCH 4
#define CODEC_TOO_LARGE 5
#define CODEC_TOO_SMALL 6
#define CODEC_EMPTY 7
#define CODEC_WRITE 8
#define CODEC_NOMEM 9
#define CODEC_HASH_ERROR 10
#define CODEC_RETRY 11 /* one-shot failed and replay was off: stream it to know why */

#define CODEC_ALG_SHA1 0
#define CODEC_ALG_RMD160 1
#define CODEC_ALG_SHAKE128 2

#define CODEC_DIGEST_SIZE 20

typedef struct codec_md codec_md;           /* an EVP_MD, fetched once */
typedef struct codec_decoder codec_decoder;
typedef struct codec_encoder codec_encoder;

typedef struct codec_result {
    unsigned long long size;            /* decoded (plain) bytes */
    unsigned long long compressed_size; /* bytes as stored: fed in or written out */
    int sys_errno;                      /* errno of a failed write() */
    unsigned char digest[20];           /* content hash over the stored bytes */
} codec_result;

/* The digest implementation for CODEC_ALG_*, NULL if this libcrypto lacks it. */
const codec_md *codec_md_fetch(int algorithm);
/* 1 if this build inflates whole objects with libdeflate. */
int codec_have_libdeflate(void);

/* A streaming decoder (zlib).  expected_digest: 20 bytes or NULL;
 * expected_size: -1 for unknown.  NULL on out-of-memory or a digest that
 * cannot be initialised. */
codec_decoder *codec_decoder_new(const codec_md *md, int fd,
                                 const unsigned char *expected_digest,
                                 long long expected_size, int compressed);
int codec_decoder_feed(codec_decoder *dec, const char *data, size_t len);
int codec_decoder_finish(codec_decoder *dec, codec_result *result);
void codec_decoder_free(codec_decoder *dec);
/* A whole object in one call, without copying the input.  With libdeflate
 * and an expected size of at most oneshot_limit, it is inflated in one
 * libdeflate call straight into a buffer of exactly that size; else (and to
 * name the failure of a damaged object) it streams through zlib; with
 * replay == 0 it returns CODEC_RETRY instead, having written nothing, so that
 * the caller can stream the pieces as they came.  Returns the decoded size,
 * or minus a CODEC_* status. */
long long codec_decode(const codec_md *md, int fd, const char *data, size_t len,
                       const unsigned char *expected_digest, long long expected_size,
                       int compressed, long long oneshot_limit, int replay,
                       codec_result *result);

codec_encoder *codec_encoder_new(const codec_md *md, int fd, int level);
int codec_encoder_feed(codec_encoder *enc, const char *data, size_t len);
int codec_encoder_finish(codec_encoder *enc, codec_result *result);
void codec_encoder_free(codec_encoder *enc);
