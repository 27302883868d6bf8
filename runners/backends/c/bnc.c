/* bnconform's C BatchNorm kernels (see bnc.h). C99 + optional OpenMP. */
#include "bnc.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define BNC_TID() omp_get_thread_num()
#else
#define BNC_TID() 0
#if defined(__GNUC__)
/* Without OpenMP the omp pragmas are meant to be ignored: do not warn about each of them. */
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif
#endif

/* Planes of at least this many values use the plane path. */
#define PLANE_MIN 256
/* Position path: about this many (c, s) accumulators per channel block. */
#define BLOCK_WIDTH 2048
/* Below this many elements a single thread is faster than waking a team. */
#define PARALLEL_MIN 32768
/* Input + output above this size: outputs are written with streaming stores (f32/f64 only). */
#define STREAM_MIN_BYTES (48.0 * 1024 * 1024)
/* channels_last: channels per tile, values per two-pass block (a block stays in cache between its
 * two passes), work units to aim for, and a bound on chunks x channels of partial results. */
#define CL_TILE 1024
#define CL_BLOCK_VALUES 8192
#define CL_UNITS 64
#define CL_PARTIALS (1 << 20)

const char *bn_strerror(int code) {
    switch (code) {
    case BN_OK: return "ok";
    case BN_ERR_NULL: return "a required pointer is NULL (or an allocation failed)";
    case BN_ERR_SHAPE: return "N, C or S is negative or N*C*S overflows";
    case BN_ERR_SIZE: return "a buffer length disagrees with N, C and S";
    case BN_ERR_EPS: return "eps must be a non-negative finite number";
    case BN_ERR_COUNT: return "running variance update needs more than 1 value per channel";
    case BN_ERR_THREADS: return "thread count must be at least 1";
    case BN_ERR_LAYOUT: return "channels_last must be 0 (contiguous NCHW) or 1 (channels_last)";
    default: return "unknown error code";
    }
}

int bn_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---- 16-bit conversions (portable bit manipulation, round to nearest even) ------------------- */
static inline uint32_t bnc_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bnc_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* binary16 -> float, exact. */
static inline float bnc_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = h & 0x7fffu;
    uint32_t u;
    if (em >= 0x7c00u) /* infinity or NaN (payload kept) */
        u = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u) /* normal: rebias the exponent (127 - 15 = 112) */
        u = (em << 13) + 0x38000000u;
    else /* zero or subnormal: em * 2^-24, exact in float */
        u = bnc_f32_bits((float)em * 0x1p-24f);
    return bnc_bits_f32(u | sign);
}

/* float -> binary16, round to nearest even; overflow to infinity. */
static inline uint16_t bnc_f32_to_f16(float f) {
    uint32_t u = bnc_f32_bits(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t h;
    u &= 0x7fffffffu;
    if (u >= 0x47800000u) { /* |f| >= 65536, infinity or NaN */
        if (u > 0x7f800000u) {
            h = (u >> 13) & 0x3ffu;
            h = 0x7c00u | (h ? h : 0x200u); /* keep it a NaN */
        } else {
            h = 0x7c00u;
        }
    } else if (u < 0x38800000u) { /* |f| < 2^-14: a half subnormal or zero */
        /* Adding 0.5 (ulp 2^-24, the half subnormal step) rounds to nearest even in hardware;
         * the low bits of the sum are then the half's bits (0x400 when it rounds up to normal). */
        h = bnc_f32_bits(bnc_bits_f32(u) + 0.5f) - 0x3f000000u;
    } else { /* normal: rebias, round the 13 dropped bits to nearest even (may carry to inf) */
        h = (u - 0x38000000u + 0x0fffu + ((u >> 13) & 1u)) >> 13;
    }
    return (uint16_t)(sign | h);
}

/* bfloat16 -> float: the top 16 bits, exact. */
static inline float bnc_bf16_to_f32(uint16_t h) { return bnc_bits_f32((uint32_t)h << 16); }

/* float -> bfloat16, round to nearest even; a NaN stays a NaN. */
static inline uint16_t bnc_f32_to_bf16(float f) {
    const uint32_t u = bnc_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        const uint32_t h = u >> 16;
        return (uint16_t)((h & 0x7fu) ? h : (h | 0x40u));
    }
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#define BNC_CONVERT(name, S_T, D_T, fn)                  \
    int name(const S_T *src, D_T *dst, int64_t n) {      \
        if (!src || !dst) return BN_ERR_NULL;            \
        if (n < 0) return BN_ERR_SHAPE;                  \
        for (int64_t i = 0; i < n; ++i) dst[i] = fn(src[i]); \
        return BN_OK;                                    \
    }
BNC_CONVERT(bn_f16_to_f32, uint16_t, float, bnc_f16_to_f32)
BNC_CONVERT(bn_f32_to_f16, float, uint16_t, bnc_f32_to_f16)
BNC_CONVERT(bn_bf16_to_f32, uint16_t, float, bnc_bf16_to_f32)
BNC_CONVERT(bn_f32_to_bf16, float, uint16_t, bnc_f32_to_bf16)
#undef BNC_CONVERT

/* ---- channels_last work partition (depends on R and C only, never on the thread count) ------ */
typedef struct {
    int64_t W;      /* channels per tile */
    int64_t tiles;  /* ceil(C / W) */
    int64_t BR;     /* rows per two-pass block */
    int64_t CR;     /* rows per chunk (a multiple of BR) */
    int64_t K;      /* chunks: ceil(R / CR) */
} bnc_cl_plan;

/* R >= 1 rows of C >= 1 channels. Work unit u = (chunk u / tiles, tile u % tiles). */
static bnc_cl_plan bnc_cl_make_plan(int64_t R, int64_t C) {
    bnc_cl_plan p;
    p.W = C < CL_TILE ? C : CL_TILE;
    p.tiles = (C + p.W - 1) / p.W;
    p.BR = CL_BLOCK_VALUES / p.W > 1 ? CL_BLOCK_VALUES / p.W : 1;
    const int64_t blocks = (R + p.BR - 1) / p.BR;
    int64_t k = (CL_UNITS + p.tiles - 1) / p.tiles;
    const int64_t budget = CL_PARTIALS / C > 1 ? CL_PARTIALS / C : 1;
    if (k > budget) k = budget;
    if (k > blocks) k = blocks;
    if (k < 1) k = 1;
    p.CR = (blocks + k - 1) / k * p.BR;
    p.K = (R + p.CR - 1) / p.CR;
    return p;
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define BNC_STREAM_WIDTH (64 / (int)sizeof(T))
#elif defined(__AVX__)
#include <immintrin.h>
#define BNC_STREAM_WIDTH (32 / (int)sizeof(T))
#endif

/* Each instantiation of bnc_impl.h: T the storage type, P the per-channel and arithmetic type,
 * LD(v) storage -> P, ST(v) P -> storage, SFX the entry points' suffix, optional BNC_STREAM. */
#define T float
#define P float
#define LD(v) (v)
#define ST(v) (v)
#define SFX f32
#if defined(__AVX512F__)
#define BNC_STREAM(p, q, m, a, b) \
    _mm512_stream_ps((q), _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(p), _mm512_set1_ps(m)), _mm512_set1_ps(a), _mm512_set1_ps(b)))
#elif defined(__AVX__)
#define BNC_STREAM(p, q, m, a, b) \
    _mm256_stream_ps((q), _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p), _mm256_set1_ps(m)), _mm256_set1_ps(a)), _mm256_set1_ps(b)))
#endif
#include "bnc_impl.h"
#undef BNC_STREAM
#undef T
#undef P
#undef LD
#undef ST
#undef SFX

#define T double
#define P double
#define LD(v) (v)
#define ST(v) (v)
#define SFX f64
#if defined(__AVX512F__)
#define BNC_STREAM(p, q, m, a, b) \
    _mm512_stream_pd((q), _mm512_fmadd_pd(_mm512_sub_pd(_mm512_loadu_pd(p), _mm512_set1_pd(m)), _mm512_set1_pd(a), _mm512_set1_pd(b)))
#elif defined(__AVX__)
#define BNC_STREAM(p, q, m, a, b) \
    _mm256_stream_pd((q), _mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(p), _mm256_set1_pd(m)), _mm256_set1_pd(a)), _mm256_set1_pd(b)))
#endif
#include "bnc_impl.h"
#undef BNC_STREAM
#undef T
#undef P
#undef LD
#undef ST
#undef SFX

/* 16-bit storage, float parameters and arithmetic (no BNC_STREAM: plain stores). */
#define T uint16_t
#define P float
#define LD(v) bnc_f16_to_f32(v)
#define ST(v) bnc_f32_to_f16(v)
#define SFX f16
#include "bnc_impl.h"
#undef LD
#undef ST
#undef SFX

#define LD(v) bnc_bf16_to_f32(v)
#define ST(v) bnc_f32_to_bf16(v)
#define SFX bf16
#include "bnc_impl.h"
#undef T
#undef P
#undef LD
#undef ST
#undef SFX
