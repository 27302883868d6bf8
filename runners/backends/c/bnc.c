/* bnconform's C BatchNorm kernels (see bnc.h). C99 + optional OpenMP. */
#include "bnc.h"

#include <math.h>
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

#define T float
#define SFX f32
#include "bnc_impl.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "bnc_impl.h"
#undef T
#undef SFX
