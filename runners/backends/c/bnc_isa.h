/* One instruction set's kernels: bnc.c includes this file once per set, with BNC_ISA naming it
 * (portable, avx2, avx512) inside that set's target region, and optionally the non-temporal
 * store helpers BNC_STREAM_F32/F64 and BNC_NT_*. Every function defined here carries the suffix
 * _<BNC_ISA>; bnc.c's entry points dispatch to one of them at run time.
 *
 * Besides the BatchNorm kernels (bnc_impl.h, once per data type), this file has the 16-bit
 * conversions the tests check and the STREAM-style kernels the bench's roofline measures the
 * machine with (compiled exactly like the BatchNorm kernels, so that a bound and the kernel it
 * bounds use the same instructions and threads).
 */
#define ISFX_(name, isa) name##_##isa
#define ISFX(name, isa) ISFX_(name, isa)

#define T float
#define P float
#define LD(v) (v)
#define ST(v) (v)
#define SFX ISFX(f32, BNC_ISA)
#ifdef BNC_STREAM_F32
#define BNC_STREAM BNC_STREAM_F32
#endif
#include "bnc_impl.h"
#undef BNC_STREAM
#undef T
#undef P
#undef SFX

#define T double
#define P double
#define SFX ISFX(f64, BNC_ISA)
#ifdef BNC_STREAM_F64
#define BNC_STREAM BNC_STREAM_F64
#endif
#include "bnc_impl.h"
#undef BNC_STREAM
#undef T
#undef P
#undef LD
#undef ST
#undef SFX

/* 16-bit storage <-> float on n values: at the vector width, with F16C's or AVX-512's conversion
 * instructions for binary16 where this set has them (BNC_F16_WIDEN_V / BNC_F16_NARROW_V, one vector
 * of BNC_NT_LANES values), the rest (and bfloat16, a shift) through the portable conversions. The
 * instructions quieten a signalling NaN where the portable code keeps it, which the kernels cannot
 * show: every value they narrow comes out of float arithmetic, which has quietened it already. */
static inline void ISFX(bnc_widen_f16, BNC_ISA)(const uint16_t *restrict s, float *restrict d, int64_t n) {
    int64_t i = 0;
#if defined(BNC_F16_WIDEN_V)
    for (; i + BNC_NT_LANES <= n; i += BNC_NT_LANES) BNC_F16_WIDEN_V(s + i, d + i);
#endif
#pragma omp simd
    for (int64_t j = i; j < n; ++j) d[j] = bnc_f16_to_f32(s[j]);
}

static inline void ISFX(bnc_narrow_f16, BNC_ISA)(const float *restrict s, uint16_t *restrict d, int64_t n) {
    int64_t i = 0;
#if defined(BNC_F16_NARROW_V)
    for (; i + BNC_NT_LANES <= n; i += BNC_NT_LANES) BNC_F16_NARROW_V(s + i, d + i);
#endif
#pragma omp simd
    for (int64_t j = i; j < n; ++j) d[j] = bnc_f32_to_f16(s[j]);
}

static inline void ISFX(bnc_widen_bf16, BNC_ISA)(const uint16_t *restrict s, float *restrict d, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) d[j] = bnc_bf16_to_f32(s[j]);
}

static inline void ISFX(bnc_narrow_bf16, BNC_ISA)(const float *restrict s, uint16_t *restrict d, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) d[j] = bnc_f32_to_bf16(s[j]);
}

/* 16-bit storage, float parameters and arithmetic (plain stores). */
#define T uint16_t
#define P float
#define LD(v) bnc_f16_to_f32(v)
#define ST(v) bnc_f32_to_f16(v)
#define SFX ISFX(f16, BNC_ISA)
#define BNC_WIDEN ISFX(bnc_widen_f16, BNC_ISA)
#define BNC_NARROW ISFX(bnc_narrow_f16, BNC_ISA)
#include "bnc_impl.h"
#undef BNC_WIDEN
#undef BNC_NARROW
#undef LD
#undef ST
#undef SFX

#define LD(v) bnc_bf16_to_f32(v)
#define ST(v) bnc_f32_to_bf16(v)
#define SFX ISFX(bf16, BNC_ISA)
#define BNC_WIDEN ISFX(bnc_widen_bf16, BNC_ISA)
#define BNC_NARROW ISFX(bnc_narrow_bf16, BNC_ISA)
#include "bnc_impl.h"
#undef BNC_WIDEN
#undef BNC_NARROW
#undef T
#undef P
#undef LD
#undef ST
#undef SFX

#define BNC_CONVERT(name, S_T, D_T, fn)                                     \
    int ISFX(name, BNC_ISA)(const S_T *restrict src, D_T *restrict dst, int64_t n) { \
        if (!src || !dst) return BN_ERR_NULL;                               \
        if (n < 0) return BN_ERR_SHAPE;                                     \
        _Pragma("omp simd")                                                 \
        for (int64_t i = 0; i < n; ++i) dst[i] = fn(src[i]);                \
        return BN_OK;                                                       \
    }
BNC_CONVERT(bn_f16_to_f32, uint16_t, float, bnc_f16_to_f32)
BNC_CONVERT(bn_f32_to_f16, float, uint16_t, bnc_f32_to_f16)
BNC_CONVERT(bn_bf16_to_f32, uint16_t, float, bnc_bf16_to_f32)
BNC_CONVERT(bn_f32_to_bf16, float, uint16_t, bnc_f32_to_bf16)
#undef BNC_CONVERT

/* ---- STREAM-style kernels on float32: the roofline's measurements ---------------------------- */
/* Values per unit of work: threads take contiguous runs of these, as the BatchNorm kernels do. */
#define BNC_STREAM_CHUNK ((int64_t)1 << 16)

static int ISFX(bnc_stream_check, BNC_ISA)(const void *a, const void *b, int64_t n, int nthreads) {
    if (!a || !b) return BN_ERR_NULL;
    if (n < 0) return BN_ERR_SHAPE;
    if (nthreads < 1) return BN_ERR_THREADS;
    return BN_OK;
}

/* A sum of x (reads only); float accumulators per chunk (as fast as the loads), chunks in double. */
int ISFX(bn_stream_sum, BNC_ISA)(const float *restrict x, int64_t n, double *out, int nthreads) {
    const int rc = ISFX(bnc_stream_check, BNC_ISA)(x, out, n, nthreads);
    if (rc) return rc;
    const int64_t chunks = (n + BNC_STREAM_CHUNK - 1) / BNC_STREAM_CHUNK;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) num_threads(nthreads) if (nthreads > 1)
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t i0 = k * BNC_STREAM_CHUNK, i1 = i0 + BNC_STREAM_CHUNK < n ? i0 + BNC_STREAM_CHUNK : n;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < i1; ++i) s += x[i];
        total += (double)s;
    }
    *out = total;
    return BN_OK;
}

/* sum x*z (two read streams, no writes: the backward's reduction pass over dy and x). */
int ISFX(bn_stream_dot, BNC_ISA)(const float *restrict x, const float *restrict z, int64_t n, double *out,
                                 int nthreads) {
    int rc = ISFX(bnc_stream_check, BNC_ISA)(x, z, n, nthreads);
    if (rc || !out) return rc ? rc : BN_ERR_NULL;
    const int64_t chunks = (n + BNC_STREAM_CHUNK - 1) / BNC_STREAM_CHUNK;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) num_threads(nthreads) if (nthreads > 1)
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t i0 = k * BNC_STREAM_CHUNK, i1 = i0 + BNC_STREAM_CHUNK < n ? i0 + BNC_STREAM_CHUNK : n;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < i1; ++i) s += x[i] * z[i];
        total += (double)s;
    }
    *out = total;
    return BN_OK;
}

/* The writing kernels, op: 0 fill y = a, 1 copy y = x, 2 scale y = a*x, 3 add y = x + z,
 * 4 triad y = x + a*z; on [i0, i1), with non-temporal stores when asked and the set has them. */
static void ISFX(bnc_stream_run, BNC_ISA)(int op, const float *restrict x, const float *restrict z, float *restrict y,
                                          int64_t i0, int64_t i1, float a, int nontemporal) {
    int64_t i = i0;
#if defined(BNC_NT_F32)
    if (nontemporal) {
        for (; i < i1 && ((uintptr_t)(y + i) % 64) != 0; ++i)
            y[i] = op == 0 ? a : op == 1 ? x[i] : op == 2 ? a * x[i] : op == 3 ? x[i] + z[i] : x[i] + a * z[i];
        const BNC_NT_VEC va = BNC_NT_SET_F32(a);
        for (; i + BNC_NT_LANES <= i1; i += BNC_NT_LANES) {
            switch (op) {
            case 0: BNC_NT_F32(y + i, va); break;
            case 1: BNC_NT_F32(y + i, BNC_NT_LOAD_F32(x + i)); break;
            case 2: BNC_NT_F32(y + i, BNC_NT_MUL_F32(va, BNC_NT_LOAD_F32(x + i))); break;
            case 3: BNC_NT_F32(y + i, BNC_NT_ADD_F32(BNC_NT_LOAD_F32(x + i), BNC_NT_LOAD_F32(z + i))); break;
            default:
                BNC_NT_F32(y + i, BNC_NT_ADD_F32(BNC_NT_LOAD_F32(x + i), BNC_NT_MUL_F32(va, BNC_NT_LOAD_F32(z + i))));
            }
        }
    }
#else
    (void)nontemporal;
#endif
    switch (op) {
    case 0:
#pragma omp simd
        for (int64_t j = i; j < i1; ++j) y[j] = a;
        break;
    case 1:
#pragma omp simd
        for (int64_t j = i; j < i1; ++j) y[j] = x[j];
        break;
    case 2:
#pragma omp simd
        for (int64_t j = i; j < i1; ++j) y[j] = a * x[j];
        break;
    case 3:
#pragma omp simd
        for (int64_t j = i; j < i1; ++j) y[j] = x[j] + z[j];
        break;
    default:
#pragma omp simd
        for (int64_t j = i; j < i1; ++j) y[j] = x[j] + a * z[j];
    }
}

static int ISFX(bnc_stream_map, BNC_ISA)(int op, const float *x, const float *z, float *y, int64_t n, float a,
                                         int nontemporal, int nthreads) {
    const int64_t chunks = (n + BNC_STREAM_CHUNK - 1) / BNC_STREAM_CHUNK;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t i0 = k * BNC_STREAM_CHUNK, i1 = i0 + BNC_STREAM_CHUNK < n ? i0 + BNC_STREAM_CHUNK : n;
        ISFX(bnc_stream_run, BNC_ISA)(op, x, z, y, i0, i1, a, nontemporal);
    }
#if defined(BNC_NT_F32)
    if (nontemporal) _mm_sfence();
#endif
    return BN_OK;
}

int ISFX(bn_stream_fill, BNC_ISA)(float *y, int64_t n, float v, int nontemporal, int nthreads) {
    const int rc = ISFX(bnc_stream_check, BNC_ISA)(y, y, n, nthreads);
    return rc ? rc : ISFX(bnc_stream_map, BNC_ISA)(0, NULL, NULL, y, n, v, nontemporal, nthreads);
}

int ISFX(bn_stream_copy, BNC_ISA)(const float *x, float *y, int64_t n, int nontemporal, int nthreads) {
    const int rc = ISFX(bnc_stream_check, BNC_ISA)(x, y, n, nthreads);
    return rc ? rc : ISFX(bnc_stream_map, BNC_ISA)(1, x, NULL, y, n, 0.0f, nontemporal, nthreads);
}

int ISFX(bn_stream_scale, BNC_ISA)(const float *x, float *y, int64_t n, float a, int nontemporal, int nthreads) {
    const int rc = ISFX(bnc_stream_check, BNC_ISA)(x, y, n, nthreads);
    return rc ? rc : ISFX(bnc_stream_map, BNC_ISA)(2, x, NULL, y, n, a, nontemporal, nthreads);
}

int ISFX(bn_stream_add, BNC_ISA)(const float *x, const float *z, float *y, int64_t n, int nontemporal, int nthreads) {
    int rc = ISFX(bnc_stream_check, BNC_ISA)(x, y, n, nthreads);
    if (!rc && !z) rc = BN_ERR_NULL;
    return rc ? rc : ISFX(bnc_stream_map, BNC_ISA)(3, x, z, y, n, 0.0f, nontemporal, nthreads);
}

int ISFX(bn_stream_triad, BNC_ISA)(const float *x, const float *z, float *y, int64_t n, float a, int nontemporal,
                                   int nthreads) {
    int rc = ISFX(bnc_stream_check, BNC_ISA)(x, y, n, nthreads);
    if (!rc && !z) rc = BN_ERR_NULL;
    return rc ? rc : ISFX(bnc_stream_map, BNC_ISA)(4, x, z, y, n, a, nontemporal, nthreads);
}
#undef BNC_STREAM_CHUNK
#undef ISFX
#undef ISFX_
