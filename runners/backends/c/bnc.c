/* bnconform's C BatchNorm kernels (see bnc.h). C99 + optional OpenMP. */
#include "bnc.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

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
    case BN_ERR_ISA: return "unknown instruction set, or one this CPU does not support";
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

/* The conversions are branch-free (selects on masks) so that the loops calling them vectorise at
 * whatever width the instruction set in use gives; every ISA computes the same bits. (F16C's
 * vcvtps2ph would be one instruction, but it quietens signalling NaNs: these keep a NaN's payload
 * exactly, as NumPy's conversions do.) */
static inline uint32_t bnc_select(uint32_t cond, uint32_t a, uint32_t b) { /* cond ? a : b, cond 0 or 1 */
    const uint32_t mask = 0u - cond;
    return (a & mask) | (b & ~mask);
}

/* binary16 -> float, exact. */
static inline float bnc_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = h & 0x7fffu;
    const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);  /* infinity or NaN (payload kept) */
    const uint32_t normal = (em << 13) + 0x38000000u;               /* rebias the exponent (127 - 15 = 112) */
    const uint32_t small = bnc_f32_bits((float)(int32_t)em * 0x1p-24f); /* zero or subnormal: exact in float */
    return bnc_bits_f32(sign | bnc_select(em >= 0x7c00u, special, bnc_select(em >= 0x0400u, normal, small)));
}

/* float -> binary16, round to nearest even; overflow to infinity. */
static inline uint16_t bnc_f32_to_f16(float f) {
    const uint32_t bits = bnc_f32_bits(f);
    const uint32_t sign = (bits >> 16) & 0x8000u, u = bits & 0x7fffffffu;
    const uint32_t payload = (u >> 13) & 0x3ffu;
    /* |f| >= 65536: infinity, or a NaN kept a NaN (its payload's top bits, or a quiet bit if none) */
    const uint32_t big = bnc_select(u > 0x7f800000u, 0x7c00u | bnc_select(payload != 0u, payload, 0x200u), 0x7c00u);
    /* |f| < 2^-14, a half subnormal or zero: adding 0.5 (ulp 2^-24, the half subnormal step) rounds
     * to nearest even in hardware; the low bits of the sum are then the half's bits (0x400 when it
     * rounds up to normal) */
    const uint32_t small = bnc_f32_bits(bnc_bits_f32(u) + 0.5f) - 0x3f000000u;
    /* normal: rebias, round the 13 dropped bits to nearest even (may carry to inf) */
    const uint32_t normal = (u - 0x38000000u + 0x0fffu + ((u >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | bnc_select(u >= 0x47800000u, big, bnc_select(u < 0x38800000u, small, normal)));
}

/* bfloat16 -> float: the top 16 bits, exact. */
static inline float bnc_bf16_to_f32(uint16_t h) { return bnc_bits_f32((uint32_t)h << 16); }

/* float -> bfloat16, round to nearest even; a NaN stays a NaN (a quiet bit if its top bits are 0). */
static inline uint16_t bnc_f32_to_bf16(float f) {
    const uint32_t u = bnc_f32_bits(f), h = u >> 16;
    const uint32_t nan = bnc_select((h & 0x7fu) != 0u, h, h | 0x40u);
    return (uint16_t)bnc_select((u & 0x7fffffffu) > 0x7f800000u, nan, (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

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

/* ---- one instantiation of every kernel per instruction set, chosen at run time ---------------
 * The extension is compiled for the baseline of its architecture (any x86-64 runs it); on x86-64
 * with GCC or clang, bnc_isa.h is compiled twice more, for AVX2 (with F16C) and for AVX-512 (F, BW, VL, DQ),
 * and the entry points call the widest set this CPU and OS support (BNC_ISA=portable|avx2|avx512
 * in the environment, or bn_set_isa(), asks for a narrower one). Results agree across sets to the
 * last bit except where a double sum's order follows the vector width. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define BNC_X86 1
#include <immintrin.h>
#endif

#define BNC_ISA portable
#include "bnc_isa.h"
#undef BNC_ISA

#ifdef BNC_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#endif
/* The wide sets' vector helpers, written once over BNC_V(op) (the set's intrinsic for op), its
 * float vector type BNC_NT_VEC and BNC_NT_LANES floats per vector; each set defines those three
 * and its binary16 conversions of one vector (whose half-width integer type differs). */
#define BNC_STREAM_WIDTH (BNC_NT_LANES * 4 / (int)sizeof(T))
#define BNC_STREAM_F32(p, q, m, a, b) \
    BNC_V(stream_ps)((q), BNC_V(add_ps)(BNC_V(mul_ps)(BNC_V(sub_ps)(BNC_V(loadu_ps)(p), BNC_V(set1_ps)(m)), BNC_V(set1_ps)(a)), BNC_V(set1_ps)(b)))
#define BNC_STREAM_F64(p, q, m, a, b) \
    BNC_V(stream_pd)((q), BNC_V(add_pd)(BNC_V(mul_pd)(BNC_V(sub_pd)(BNC_V(loadu_pd)(p), BNC_V(set1_pd)(m)), BNC_V(set1_pd)(a)), BNC_V(set1_pd)(b)))
#define BNC_NT_F32(q, v) BNC_V(stream_ps)((q), (v))
#define BNC_NT_LOAD_F32(p) BNC_V(loadu_ps)(p)
#define BNC_NT_SET_F32(v) BNC_V(set1_ps)(v)
#define BNC_NT_MUL_F32(a, b) BNC_V(mul_ps)((a), (b))
#define BNC_NT_ADD_F32(a, b) BNC_V(add_ps)((a), (b))

#define BNC_ISA avx2
#define BNC_V(op) _mm256_##op
#define BNC_NT_VEC __m256
#define BNC_NT_LANES 8
#define BNC_F16_WIDEN_V(s, d) _mm256_storeu_ps((d), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s))))
#define BNC_F16_NARROW_V(s, d) \
    _mm_storeu_si128((__m128i *)(d), _mm256_cvtps_ph(_mm256_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#include "bnc_isa.h"
#undef BNC_ISA
#undef BNC_V
#undef BNC_NT_VEC
#undef BNC_NT_LANES
#undef BNC_F16_WIDEN_V
#undef BNC_F16_NARROW_V
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")
#endif
#define BNC_ISA avx512
#define BNC_V(op) _mm512_##op
#define BNC_NT_VEC __m512
#define BNC_NT_LANES 16
#define BNC_F16_WIDEN_V(s, d) _mm512_storeu_ps((d), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s))))
#define BNC_F16_NARROW_V(s, d) \
    _mm256_storeu_si256((__m256i *)(d), _mm512_cvtps_ph(_mm512_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#include "bnc_isa.h"
#undef BNC_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* BNC_X86 */

/* ---- run-time dispatch ------------------------------------------------------------------------ */
enum { BNC_PORTABLE = 0, BNC_AVX2 = 1, BNC_AVX512 = 2 };
static const char *const bnc_isa_names[] = {"portable", "avx2", "avx512"};
static int bnc_level = -1; /* chosen on first use; a race between threads writes the same value */

static int bnc_best_level(void) {
#ifdef BNC_X86
    __builtin_cpu_init(); /* these checks include the OS saving the wider registers (XGETBV) */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return BNC_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) return BNC_AVX2;
#endif
    return BNC_PORTABLE;
}

static int bnc_level_named(const char *name) {
    for (int i = 0; i < 3; ++i)
        if (name && strcmp(name, bnc_isa_names[i]) == 0) return i;
    return -1;
}

static int bnc_current(void) {
    if (bnc_level < 0) {
        const int best = bnc_best_level(), asked = bnc_level_named(getenv("BNC_ISA"));
        bnc_level = asked >= 0 && asked < best ? asked : best;
    }
    return bnc_level;
}

const char *bn_isa(void) { return bnc_isa_names[bnc_current()]; }

const char *bn_best_isa(void) { return bnc_isa_names[bnc_best_level()]; }

int bn_set_isa(const char *name) {
    const int level = bnc_level_named(name);
    if (level < 0 || level > bnc_best_level()) return BN_ERR_ISA;
    bnc_level = level;
    return BN_OK;
}

#ifdef BNC_X86
#define BNC_CALL(fn, args)                                                                            \
    switch (bnc_current()) {                                                                          \
    case BNC_AVX512: return CAT(fn, _avx512) args;                                                    \
    case BNC_AVX2: return CAT(fn, _avx2) args;                                                        \
    default: return CAT(fn, _portable) args;                                                          \
    }
#else
#define BNC_CALL(fn, args) return CAT(fn, _portable) args;
#endif

#define FWD_TRAIN(T, P) (const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S, \
    int channels_last, const P *weight, const P *bias, P *running_mean, P *running_var, int64_t c_len, \
    double factor, double eps, double *save_mean, double *save_invstd, int nthreads)
#define FWD_TRAIN_ARGS (x, x_len, y, y_len, N, C, S, channels_last, weight, bias, running_mean, running_var, \
    c_len, factor, eps, save_mean, save_invstd, nthreads)
#define FWD_EVAL(T, P) (const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S, \
    int channels_last, const P *weight, const P *bias, const P *running_mean, const P *running_var, \
    int64_t c_len, double eps, int nthreads)
#define FWD_EVAL_ARGS (x, x_len, y, y_len, N, C, S, channels_last, weight, bias, running_mean, running_var, \
    c_len, eps, nthreads)
#define BWD_TRAIN(T, P) (const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, \
    int64_t S, int channels_last, const P *weight, const double *save_mean, const double *save_invstd, \
    P *dweight, P *dbias, int64_t c_len, int nthreads)
#define BWD_TRAIN_ARGS (dy, dy_len, x, dx, x_len, N, C, S, channels_last, weight, save_mean, save_invstd, \
    dweight, dbias, c_len, nthreads)
#define BWD_EVAL(T, P) (const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, \
    int64_t S, int channels_last, const P *weight, const P *running_mean, const P *running_var, double eps, \
    P *dweight, P *dbias, int64_t c_len, int nthreads)
#define BWD_EVAL_ARGS (dy, dy_len, x, dx, x_len, N, C, S, channels_last, weight, running_mean, running_var, \
    eps, dweight, dbias, c_len, nthreads)
#define STATS(T) (const T *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last, double *mean, \
    double *var, int64_t c_len, int nthreads)
#define STATS_ARGS (x, x_len, N, C, S, channels_last, mean, var, c_len, nthreads)

#define BNC_ENTRY_POINTS(sfx, T, P)                                                                   \
    int bn_forward_train_##sfx FWD_TRAIN(T, P) { BNC_CALL(bn_forward_train_##sfx, FWD_TRAIN_ARGS) }   \
    int bn_forward_eval_##sfx FWD_EVAL(T, P) { BNC_CALL(bn_forward_eval_##sfx, FWD_EVAL_ARGS) }       \
    int bn_backward_train_##sfx BWD_TRAIN(T, P) { BNC_CALL(bn_backward_train_##sfx, BWD_TRAIN_ARGS) } \
    int bn_backward_eval_##sfx BWD_EVAL(T, P) { BNC_CALL(bn_backward_eval_##sfx, BWD_EVAL_ARGS) }     \
    int bn_batch_stats_##sfx STATS(T) { BNC_CALL(bn_batch_stats_##sfx, STATS_ARGS) }
BNC_ENTRY_POINTS(f32, float, float)
BNC_ENTRY_POINTS(f64, double, double)
BNC_ENTRY_POINTS(f16, uint16_t, float)
BNC_ENTRY_POINTS(bf16, uint16_t, float)

int bn_f16_to_f32(const uint16_t *src, float *dst, int64_t n) { BNC_CALL(bn_f16_to_f32, (src, dst, n)) }
int bn_f32_to_f16(const float *src, uint16_t *dst, int64_t n) { BNC_CALL(bn_f32_to_f16, (src, dst, n)) }
int bn_bf16_to_f32(const uint16_t *src, float *dst, int64_t n) { BNC_CALL(bn_bf16_to_f32, (src, dst, n)) }
int bn_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) { BNC_CALL(bn_f32_to_bf16, (src, dst, n)) }

int bn_stream_sum(const float *x, int64_t n, double *out, int nthreads) {
    BNC_CALL(bn_stream_sum, (x, n, out, nthreads))
}
int bn_stream_dot(const float *x, const float *z, int64_t n, double *out, int nthreads) {
    BNC_CALL(bn_stream_dot, (x, z, n, out, nthreads))
}
int bn_stream_fill(float *y, int64_t n, float v, int nontemporal, int nthreads) {
    BNC_CALL(bn_stream_fill, (y, n, v, nontemporal, nthreads))
}
int bn_stream_copy(const float *x, float *y, int64_t n, int nontemporal, int nthreads) {
    BNC_CALL(bn_stream_copy, (x, y, n, nontemporal, nthreads))
}
int bn_stream_scale(const float *x, float *y, int64_t n, float a, int nontemporal, int nthreads) {
    BNC_CALL(bn_stream_scale, (x, y, n, a, nontemporal, nthreads))
}
int bn_stream_add(const float *x, const float *z, float *y, int64_t n, int nontemporal, int nthreads) {
    BNC_CALL(bn_stream_add, (x, z, y, n, nontemporal, nthreads))
}
int bn_stream_triad(const float *x, const float *z, float *y, int64_t n, float a, int nontemporal, int nthreads) {
    BNC_CALL(bn_stream_triad, (x, z, y, n, a, nontemporal, nthreads))
}
