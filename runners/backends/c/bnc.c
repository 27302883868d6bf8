/* bnconform's C BatchNorm kernels (see bnc.h). C99 + optional OpenMP. */
#include "bnc.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Planes of at least this many values use the plane path. */
#define PLANE_MIN 256
/* Position path: about this many (c, s) accumulators per channel block. */
#define BLOCK_WIDTH 2048
/* Below this many elements a single thread is faster than waking a team. */
#define PARALLEL_MIN 32768
/* Input + output above this size: outputs are written with streaming stores. */
#define STREAM_MIN_BYTES (48.0 * 1024 * 1024)

const char *bn_strerror(int code) {
    switch (code) {
    case BN_OK: return "ok";
    case BN_ERR_NULL: return "a required pointer is NULL (or an allocation failed)";
    case BN_ERR_SHAPE: return "N, C or S is negative or N*C*S overflows";
    case BN_ERR_SIZE: return "a buffer length disagrees with N, C and S";
    case BN_ERR_EPS: return "eps must be a non-negative finite number";
    case BN_ERR_COUNT: return "running variance update needs more than 1 value per channel";
    case BN_ERR_THREADS: return "thread count must be at least 1";
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

#if defined(__AVX512F__)
#include <immintrin.h>
#define BNC_STREAM_WIDTH (64 / (int)sizeof(T))
#elif defined(__AVX__)
#include <immintrin.h>
#define BNC_STREAM_WIDTH (32 / (int)sizeof(T))
#endif

#define T float
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
#undef SFX

#define T double
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
#undef SFX
