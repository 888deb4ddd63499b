/* uvm_codec.c: turn a CernVM-FS object into verified plain bytes on an fd.
 *
 * A decoder hashes the stored (compressed) bytes, inflates them and write()s
 * the output to a file descriptor.  Output beyond the expected size is never
 * written: the decode stops with CODEC_TOO_LARGE.
 *
 * Two inflate paths give the same results:
 *  - stream (codec_decoder_*): zlib inflate() on each piece as it comes,
 *    through a bounded output buffer;
 *  - one-shot (codec_decode): the whole object is in memory and its expected
 *    size known, so libdeflate inflates it in one call straight into a
 *    buffer of exactly that size (about twice zlib's speed).  Any result but
 *    a clean success is replayed through the stream path, so that zlib alone
 *    decides which failure it is.
 *
 * No global state; cffi releases the GIL around every call.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>
#ifdef UVM_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#include "uvm_codec.h"

#define OUT_CHUNK (128 * 1024) /* stream path output buffer */

enum mode { MODE_RAW, MODE_ONESHOT, MODE_STREAM };

struct codec_decoder {
    EVP_MD_CTX *md_ctx;
    int xof;
    int fd;
    int status; /* sticky: once failed, every call returns it */
    int sys_errno;
    enum mode mode;
    int compressed;
    int z_ready;    /* inflateInit done */
    int replay;     /* one-shot failure: replay through zlib (else CODEC_RETRY) */
    int stream_end; /* the zlib stream is complete */
    long long expected_size;
    const unsigned char *expected_digest; /* points into expected_copy */
    unsigned char expected_copy[CODEC_DIGEST_SIZE];
    unsigned long long size, fed;
    z_stream z;
    unsigned char *out;           /* stream path output buffer */
    const unsigned char *in;      /* whole input of a one-shot decode (borrowed) */
    size_t in_len, in_bound;
};

struct codec_encoder {
    EVP_MD_CTX *md_ctx;
    int xof;
    int fd;
    int status;
    int sys_errno;
    unsigned long long size, compressed_size;
    z_stream z;
    unsigned char out[OUT_CHUNK];
};

const codec_md *codec_md_fetch(int algorithm)
{
    static const char *const names[] = {"SHA1", "RIPEMD160", "SHAKE128"};
    if (algorithm < 0 || algorithm > 2)
        return NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    /* An explicit fetch, kept by the caller: init then skips the per-call
     * provider lookup (and its lock). */
    return (const codec_md *)EVP_MD_fetch(NULL, names[algorithm], NULL);
#else
    return (const codec_md *)EVP_get_digestbyname(names[algorithm]);
#endif
}

int codec_have_libdeflate(void)
{
#ifdef UVM_HAVE_LIBDEFLATE
    return 1;
#else
    return 0;
#endif
}

static EVP_MD_CTX *md_start(const codec_md *md, int *xof)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (md == NULL || !EVP_DigestInit_ex(ctx, (const EVP_MD *)md, NULL)) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    *xof = (EVP_MD_flags((const EVP_MD *)md) & EVP_MD_FLAG_XOF) != 0;
    return ctx;
}

static int md_done(EVP_MD_CTX *ctx, int xof, unsigned char *digest)
{
    unsigned int len = 0;
    if (xof)
        return EVP_DigestFinalXOF(ctx, digest, CODEC_DIGEST_SIZE) ? CODEC_OK
                                                                  : CODEC_HASH_ERROR;
    if (!EVP_DigestFinal_ex(ctx, digest, &len) || len != CODEC_DIGEST_SIZE)
        return CODEC_HASH_ERROR;
    return CODEC_OK;
}

static int write_all(int fd, const unsigned char *buf, size_t len, int *sys_errno)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *sys_errno = errno;
            return CODEC_WRITE;
        }
        buf += n;
        len -= (size_t)n;
    }
    return CODEC_OK;
}

/* ---- decoder ---------------------------------------------------------- */

static int dec_init(codec_decoder *dec, const codec_md *md, int fd,
                    const unsigned char *expected_digest, long long expected_size,
                    int compressed, long long oneshot_limit)
{
    memset(dec, 0, sizeof(*dec));
    dec->fd = fd;
    dec->compressed = compressed;
    dec->expected_size = expected_size < 0 ? -1 : expected_size;
    if (expected_digest != NULL) {
        memcpy(dec->expected_copy, expected_digest, CODEC_DIGEST_SIZE);
        dec->expected_digest = dec->expected_copy;
    }
    dec->mode = compressed ? MODE_STREAM : MODE_RAW;
#ifdef UVM_HAVE_LIBDEFLATE
    if (compressed && expected_size >= 0 &&
        expected_size <= oneshot_limit) {
        dec->mode = MODE_ONESHOT;
        /* A deflate stream longer than this is not what any encoder makes
         * for that output: stream it instead. */
        dec->in_bound = (size_t)expected_size + (size_t)expected_size / 8 + 4096;
    }
#else
    (void)oneshot_limit;
#endif
    dec->md_ctx = md_start(md, &dec->xof);
    return dec->md_ctx == NULL ? CODEC_HASH_ERROR : CODEC_OK;
}

static void dec_cleanup(codec_decoder *dec)
{
    if (dec->z_ready)
        inflateEnd(&dec->z);
    EVP_MD_CTX_free(dec->md_ctx);
    free(dec->out);
}

static int fail(codec_decoder *dec, int status)
{
    dec->status = status;
    return status;
}

/* Inflate one piece with zlib, writing at most expected_size bytes in all. */
static int dec_stream(codec_decoder *dec, const unsigned char *data, size_t len)
{
    if (len == 0)
        return CODEC_OK;
    if (dec->stream_end)
        return fail(dec, CODEC_TRAILING_GARBAGE);
    if (!dec->z_ready) {
        if (inflateInit(&dec->z) != Z_OK)
            return fail(dec, CODEC_NOMEM);
        dec->z_ready = 1;
    }
    if (dec->out == NULL && (dec->out = malloc(OUT_CHUNK)) == NULL)
        return fail(dec, CODEC_NOMEM);
    dec->z.next_in = (unsigned char *)data;
    dec->z.avail_in = 0;
    for (;;) {
        /* zlib counts in uInt: hand it the input in slices. */
        if (dec->z.avail_in == 0 && len > 0) {
            size_t slice = len > (1u << 30) ? (1u << 30) : len;
            dec->z.avail_in = (uInt)slice;
            len -= slice;
        }
        size_t room = OUT_CHUNK;
        if (dec->expected_size >= 0) {
            /* One byte past the expected size is enough to know it is too large. */
            unsigned long long left = (unsigned long long)dec->expected_size - dec->size + 1;
            if (left < room)
                room = (size_t)left;
        }
        dec->z.next_out = dec->out;
        dec->z.avail_out = (uInt)room;
        int rc = inflate(&dec->z, Z_NO_FLUSH);
        /* Errors first, as Python's zlib does: a stream whose last output
         * overflows but whose checksum then fails is CORRUPT. */
        if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR)
            return fail(dec, CODEC_CORRUPT);
        if (rc == Z_MEM_ERROR)
            return fail(dec, CODEC_NOMEM);
        size_t produced = room - dec->z.avail_out;
        if (produced > 0) {
            dec->size += produced;
            if (dec->expected_size >= 0 && dec->size > (unsigned long long)dec->expected_size)
                return fail(dec, CODEC_TOO_LARGE);
            int st = write_all(dec->fd, dec->out, produced, &dec->sys_errno);
            if (st != CODEC_OK)
                return fail(dec, st);
        }
        if (rc == Z_STREAM_END) {
            dec->stream_end = 1;
            return dec->z.avail_in > 0 || len > 0 ? fail(dec, CODEC_TRAILING_GARBAGE)
                                                   : CODEC_OK;
        }
        /* Z_OK or Z_BUF_ERROR: done with this piece once all of it is in
         * and zlib had output room left over (nothing more pending). */
        if (dec->z.avail_in == 0 && len == 0 && dec->z.avail_out > 0)
            return CODEC_OK;
    }
}

#ifdef UVM_HAVE_LIBDEFLATE
/* Leave the one-shot path: run the input through zlib instead. */
static int dec_to_stream(codec_decoder *dec)
{
    dec->mode = MODE_STREAM;
    int st = dec_stream(dec, dec->in, dec->in_len);
    dec->in = NULL;
    dec->in_len = 0;
    return st;
}

/* Inflate the whole input in one call.  Only a clean success counts;
 * anything else is replayed through zlib to name the failure. */
static int dec_oneshot(codec_decoder *dec)
{
    size_t want = (size_t)dec->expected_size;
    unsigned char small[16384]; /* most objects: no malloc */
    unsigned char *out = want <= sizeof(small) ? small : malloc(want);
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t used_in = 0, used_out = 0;
    enum libdeflate_result r = LIBDEFLATE_BAD_DATA;
    if (out != NULL && d != NULL)
        r = libdeflate_zlib_decompress_ex(d, dec->in, dec->in_len, out, want,
                                          &used_in, &used_out);
    libdeflate_free_decompressor(d);
    if (out == NULL)
        return fail(dec, CODEC_NOMEM);
    int st = CODEC_OK;
    if (r == LIBDEFLATE_SUCCESS && used_in == dec->in_len) {
        dec->size = used_out;
        dec->stream_end = 1;
        st = write_all(dec->fd, out, used_out, &dec->sys_errno);
    }
    if (out != small)
        free(out);
    if (r != LIBDEFLATE_SUCCESS || used_in != dec->in_len)
        return dec->replay ? dec_to_stream(dec) : fail(dec, CODEC_RETRY);
    return st == CODEC_OK ? CODEC_OK : fail(dec, st);
}
#endif

static int dec_feed(codec_decoder *dec, const unsigned char *data, size_t len)
{
    if (dec->status != CODEC_OK)
        return dec->status;
    if (len == 0)
        return CODEC_OK;
    dec->fed += len;
    if (!EVP_DigestUpdate(dec->md_ctx, data, len))
        return fail(dec, CODEC_HASH_ERROR);
    switch (dec->mode) {
    case MODE_RAW: {
        dec->size += len;
        if (dec->expected_size >= 0 && dec->size > (unsigned long long)dec->expected_size)
            return fail(dec, CODEC_TOO_LARGE);
        int st = write_all(dec->fd, data, len, &dec->sys_errno);
        return st == CODEC_OK ? CODEC_OK : fail(dec, st);
    }
    default:
        return dec_stream(dec, data, len);
    }
}

static int dec_finish(codec_decoder *dec, codec_result *result)
{
    if (dec->status != CODEC_OK)
        return dec->status;
    if (dec->compressed && dec->fed == 0)
        return fail(dec, CODEC_EMPTY);
#ifdef UVM_HAVE_LIBDEFLATE
    if (dec->mode == MODE_ONESHOT) {
        int st = dec_oneshot(dec);
        if (st != CODEC_OK)
            return st;
    }
#endif
    if (dec->compressed && !dec->stream_end)
        return fail(dec, CODEC_TRUNCATED);
    int st = md_done(dec->md_ctx, dec->xof, result->digest);
    if (st != CODEC_OK)
        return fail(dec, st);
    result->size = dec->size;
    result->compressed_size = dec->fed;
    if (dec->expected_digest != NULL &&
        memcmp(result->digest, dec->expected_digest, CODEC_DIGEST_SIZE) != 0)
        return fail(dec, CODEC_HASH_MISMATCH);
    if (dec->expected_size >= 0 && dec->size < (unsigned long long)dec->expected_size)
        return fail(dec, CODEC_TOO_SMALL);
    /* Finished for good: further calls get an error, not a second digest. */
    dec->status = CODEC_HASH_ERROR;
    return CODEC_OK;
}

codec_decoder *codec_decoder_new(const codec_md *md, int fd,
                                 const unsigned char *expected_digest,
                                 long long expected_size, int compressed)
{
    codec_decoder *dec = malloc(sizeof(*dec));
    if (dec == NULL)
        return NULL;
    if (dec_init(dec, md, fd, expected_digest, expected_size, compressed, -1) != CODEC_OK) {
        dec_cleanup(dec);
        free(dec);
        return NULL;
    }
    return dec;
}

int codec_decoder_feed(codec_decoder *dec, const char *data, size_t len)
{
    return dec_feed(dec, (const unsigned char *)data, len);
}

int codec_decoder_finish(codec_decoder *dec, codec_result *result)
{
    int st = dec_finish(dec, result);
    result->sys_errno = dec->sys_errno;
    return st;
}

void codec_decoder_free(codec_decoder *dec)
{
    if (dec != NULL) {
        dec_cleanup(dec);
        free(dec);
    }
}

long long codec_decode(const codec_md *md, int fd, const char *data, size_t len,
                       const unsigned char *expected_digest, long long expected_size,
                       int compressed, long long oneshot_limit, int replay,
                       codec_result *result)
{
    codec_decoder dec;
    int st = dec_init(&dec, md, fd, expected_digest, expected_size, compressed,
                      oneshot_limit);
    dec.replay = replay;
    if (st == CODEC_OK && dec.mode == MODE_ONESHOT && len <= dec.in_bound) {
        /* The caller's buffer is the input: no copy. */
        dec.fed = len;
        dec.in = (const unsigned char *)data;
        dec.in_len = len;
        if (len > 0 && !EVP_DigestUpdate(dec.md_ctx, data, len))
            st = fail(&dec, CODEC_HASH_ERROR);
    } else if (st == CODEC_OK) {
        if (dec.mode == MODE_ONESHOT)
            dec.mode = MODE_STREAM;
        st = dec_feed(&dec, (const unsigned char *)data, len);
    }
    if (st == CODEC_OK)
        st = dec_finish(&dec, result);
    result->sys_errno = dec.sys_errno;
    dec_cleanup(&dec);
    return st == CODEC_OK ? (long long)result->size : -st;
}

/* ---- encoder ---------------------------------------------------------- */

static int enc_fail(codec_encoder *enc, int status)
{
    enc->status = status;
    return status;
}

static int enc_run(codec_encoder *enc, int flush)
{
    for (;;) {
        enc->z.next_out = enc->out;
        enc->z.avail_out = OUT_CHUNK;
        int rc = deflate(&enc->z, flush);
        if (rc == Z_STREAM_ERROR)
            return enc_fail(enc, CODEC_CORRUPT);
        size_t produced = OUT_CHUNK - enc->z.avail_out;
        if (produced > 0) {
            enc->compressed_size += produced;
            if (!EVP_DigestUpdate(enc->md_ctx, enc->out, produced))
                return enc_fail(enc, CODEC_HASH_ERROR);
            int st = write_all(enc->fd, enc->out, produced, &enc->sys_errno);
            if (st != CODEC_OK)
                return enc_fail(enc, st);
        }
        if (flush == Z_FINISH ? rc == Z_STREAM_END
                              : enc->z.avail_in == 0 && enc->z.avail_out > 0)
            return CODEC_OK;
    }
}

codec_encoder *codec_encoder_new(const codec_md *md, int fd, int level)
{
    codec_encoder *enc = malloc(sizeof(*enc));
    if (enc == NULL)
        return NULL;
    memset(enc, 0, offsetof(codec_encoder, out));
    enc->fd = fd;
    enc->md_ctx = md_start(md, &enc->xof);
    if (enc->md_ctx == NULL || deflateInit(&enc->z, level) != Z_OK) {
        EVP_MD_CTX_free(enc->md_ctx);
        free(enc);
        return NULL;
    }
    return enc;
}

int codec_encoder_feed(codec_encoder *enc, const char *data, size_t len)
{
    if (enc->status != CODEC_OK)
        return enc->status;
    enc->size += len;
    while (len > 0) {
        size_t slice = len > (1u << 30) ? (1u << 30) : len;
        enc->z.next_in = (unsigned char *)data;
        enc->z.avail_in = (uInt)slice;
        int st = enc_run(enc, Z_NO_FLUSH);
        if (st != CODEC_OK)
            return st;
        data += slice;
        len -= slice;
    }
    return CODEC_OK;
}

int codec_encoder_finish(codec_encoder *enc, codec_result *result)
{
    int st = enc->status;
    if (st == CODEC_OK) {
        enc->z.next_in = NULL;
        enc->z.avail_in = 0;
        st = enc_run(enc, Z_FINISH);
    }
    if (st == CODEC_OK)
        st = md_done(enc->md_ctx, enc->xof, result->digest);
    result->size = enc->size;
    result->compressed_size = enc->compressed_size;
    result->sys_errno = enc->sys_errno;
    if (st == CODEC_OK)
        enc->status = CODEC_HASH_ERROR; /* finished for good */
    return st;
}

void codec_encoder_free(codec_encoder *enc)
{
    if (enc != NULL) {
        deflateEnd(&enc->z);
        EVP_MD_CTX_free(enc->md_ctx);
        free(enc);
    }
}
