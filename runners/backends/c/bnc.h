/* bnconform's C BatchNorm kernels on (N, C, S) data, S = product of spatial sizes.
 *
 * Layout (`channels_last`, every entry point): 0 = contiguous NCHW, element (n, c, s) at
 * (n*C + c)*S + s; 1 = channels_last (NHWC), the same data stored as (N, S, C), element
 * (n, c, s) at (n*S + s)*C + c. Both are handled natively (no copy to the other layout); an
 * output (y, dx) has the layout of its input. When S == 1 or C == 1 the two coincide.
 *
 * Data types, one entry point per type (suffix):
 *   _f32 / _f64: data (x, y, dy, dx) and per-channel arrays (weight, bias, running_mean,
 *                running_var, dweight, dbias) are float / double.
 *   _f16 / _bf16: data are 16-bit, IEEE binary16 (_f16) or bfloat16 (_bf16), stored as
 *                uint16_t (their bit patterns); per-channel arrays are float (float32), the
 *                mixed-precision convention. Values are widened to float exactly; results are
 *                computed in float and rounded once to the 16-bit type, to nearest even.
 * Statistics (mean, variance, the backward sums) accumulate in double for every type, never in
 * the data type: a float16 batch whose sum overflows float16 normalises correctly.
 *
 * Every entry point checks its pointers, sizes and layout flag before touching memory and
 * returns a BN_* code; bn_strerror() turns it into text. Results do not depend on nthreads.
 * The module semantics around these kernels live in Python (KernelModule).
 */
#ifndef BNC_H
#define BNC_H
#include <stdint.h>

#define BN_OK 0
#define BN_ERR_NULL 1      /* a required pointer is NULL (or an allocation failed) */
#define BN_ERR_SHAPE 2     /* N, C or S negative, or N*C*S overflows */
#define BN_ERR_SIZE 3      /* a buffer length disagrees with N, C, S */
#define BN_ERR_EPS 4       /* eps negative (or not finite) */
#define BN_ERR_COUNT 5     /* running variance update with fewer than 2 values per channel */
#define BN_ERR_THREADS 6   /* thread count < 1 */
#define BN_ERR_LAYOUT 7    /* channels_last is neither 0 nor 1 */
#define BN_ERR_ISA 8       /* bn_set_isa: an unknown instruction set, or one this CPU lacks */

const char *bn_strerror(int code);
int bn_openmp_enabled(void);

/* The instruction set the kernels run with: "portable" (the architecture's baseline, e.g. SSE2 on
 * x86-64), "avx2" (with F16C) or "avx512" (F, BW, VL, DQ). The widest this CPU and its OS support is chosen at
 * the first call; BNC_ISA in the environment (read then) or bn_set_isa() asks for a narrower one
 * (bn_set_isa refuses a set this CPU lacks with BN_ERR_ISA). bn_best_isa() is the widest here. */
const char *bn_isa(void);
const char *bn_best_isa(void);
int bn_set_isa(const char *name);

/* Training forward: batch mean and biased variance per channel, y = (x - mean) * invstd * w + b.
 * Statistics are exact two-pass sums in double: per (n, c) plane or per block of rows, merged
 * with Chan's formula. save_mean/save_invstd get the statistics (double, C values). If
 * running_mean/var are given they are updated in place with `factor` and the unbiased
 * variance: r = (1 - factor)*r + factor*stat. weight/bias may be NULL (affine=False). With no
 * values per channel (N*S == 0) save_mean/save_invstd are NaN and nothing else is touched. */
int bn_forward_train_f32(const float *x, int64_t x_len, float *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S, int channels_last,
                         const float *weight, const float *bias, float *running_mean, float *running_var,
                         int64_t c_len, double factor, double eps,
                         double *save_mean, double *save_invstd, int nthreads);
int bn_forward_train_f64(const double *x, int64_t x_len, double *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S, int channels_last,
                         const double *weight, const double *bias, double *running_mean, double *running_var,
                         int64_t c_len, double factor, double eps,
                         double *save_mean, double *save_invstd, int nthreads);
int bn_forward_train_f16(const uint16_t *x, int64_t x_len, uint16_t *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S, int channels_last,
                         const float *weight, const float *bias, float *running_mean, float *running_var,
                         int64_t c_len, double factor, double eps,
                         double *save_mean, double *save_invstd, int nthreads);
int bn_forward_train_bf16(const uint16_t *x, int64_t x_len, uint16_t *y, int64_t y_len,
                          int64_t N, int64_t C, int64_t S, int channels_last,
                          const float *weight, const float *bias, float *running_mean, float *running_var,
                          int64_t c_len, double factor, double eps,
                          double *save_mean, double *save_invstd, int nthreads);

/* Eval forward from running statistics: y = (x - running_mean) / sqrt(running_var + eps) * w + b. */
int bn_forward_eval_f32(const float *x, int64_t x_len, float *y, int64_t y_len,
                        int64_t N, int64_t C, int64_t S, int channels_last,
                        const float *weight, const float *bias, const float *running_mean, const float *running_var,
                        int64_t c_len, double eps, int nthreads);
int bn_forward_eval_f64(const double *x, int64_t x_len, double *y, int64_t y_len,
                        int64_t N, int64_t C, int64_t S, int channels_last,
                        const double *weight, const double *bias, const double *running_mean, const double *running_var,
                        int64_t c_len, double eps, int nthreads);
int bn_forward_eval_f16(const uint16_t *x, int64_t x_len, uint16_t *y, int64_t y_len,
                        int64_t N, int64_t C, int64_t S, int channels_last,
                        const float *weight, const float *bias, const float *running_mean, const float *running_var,
                        int64_t c_len, double eps, int nthreads);
int bn_forward_eval_bf16(const uint16_t *x, int64_t x_len, uint16_t *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S, int channels_last,
                         const float *weight, const float *bias, const float *running_mean, const float *running_var,
                         int64_t c_len, double eps, int nthreads);

/* Backward through batch statistics: dx (layout of x; dy has that layout too), and per channel
 * dweight = sum dy*xhat, dbias = sum dy (sums in double, stored as the per-channel type). */
int bn_backward_train_f32(const float *dy, int64_t dy_len, const float *x, float *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                          const double *save_mean, const double *save_invstd,
                          float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_train_f64(const double *dy, int64_t dy_len, const double *x, double *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, int channels_last, const double *weight,
                          const double *save_mean, const double *save_invstd,
                          double *dweight, double *dbias, int64_t c_len, int nthreads);
int bn_backward_train_f16(const uint16_t *dy, int64_t dy_len, const uint16_t *x, uint16_t *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                          const double *save_mean, const double *save_invstd,
                          float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_train_bf16(const uint16_t *dy, int64_t dy_len, const uint16_t *x, uint16_t *dx, int64_t x_len,
                           int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                           const double *save_mean, const double *save_invstd,
                           float *dweight, float *dbias, int64_t c_len, int nthreads);

/* Backward with running statistics as constants: dx = dy * w / sqrt(running_var + eps) (layout of
 * x), dweight = sum dy*(x - running_mean) / sqrt(running_var + eps), dbias = sum dy. */
int bn_backward_eval_f32(const float *dy, int64_t dy_len, const float *x, float *dx, int64_t x_len,
                         int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                         const float *running_mean, const float *running_var, double eps,
                         float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_eval_f64(const double *dy, int64_t dy_len, const double *x, double *dx, int64_t x_len,
                         int64_t N, int64_t C, int64_t S, int channels_last, const double *weight,
                         const double *running_mean, const double *running_var, double eps,
                         double *dweight, double *dbias, int64_t c_len, int nthreads);
int bn_backward_eval_f16(const uint16_t *dy, int64_t dy_len, const uint16_t *x, uint16_t *dx, int64_t x_len,
                         int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                         const float *running_mean, const float *running_var, double eps,
                         float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_eval_bf16(const uint16_t *dy, int64_t dy_len, const uint16_t *x, uint16_t *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, int channels_last, const float *weight,
                          const float *running_mean, const float *running_var, double eps,
                          float *dweight, float *dbias, int64_t c_len, int nthreads);

/* Batch statistics only: per-channel mean and biased variance (double, C values each), computed
 * as in bn_forward_train (NaN when N*S == 0). For combining the statistics of several shards of
 * a batch (SyncBatchNorm-style). */
int bn_batch_stats_f32(const float *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last,
                       double *mean, double *var, int64_t c_len, int nthreads);
int bn_batch_stats_f64(const double *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last,
                       double *mean, double *var, int64_t c_len, int nthreads);
int bn_batch_stats_f16(const uint16_t *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last,
                       double *mean, double *var, int64_t c_len, int nthreads);
int bn_batch_stats_bf16(const uint16_t *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last,
                        double *mean, double *var, int64_t c_len, int nthreads);

/* The 16-bit conversions the kernels use, on n values (exposed for tests). Widening is exact
 * (subnormals, infinities, signed zeros; a NaN stays a NaN with its payload). Narrowing rounds
 * to nearest, ties to even; overflow gives infinity; a NaN stays a NaN (payload truncated,
 * made quiet if nothing of it is left). */
int bn_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
int bn_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
int bn_bf16_to_f32(const uint16_t *src, float *dst, int64_t n);
int bn_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);

/* STREAM-style kernels on n float32 values (the bench's roofline: the machine's rates measured with
 * the same compiler, instruction set and threads as the kernels above). sum: *out = sum x (reads
 * only); dot: *out = sum x*z (two read streams); fill y = v; copy y = x; scale y = a*x; add
 * y = x + z; triad y = x + a*z. nontemporal = 1 writes y with streaming stores (no read for
 * ownership) where the instruction set has them, 0 with plain stores. */
int bn_stream_sum(const float *x, int64_t n, double *out, int nthreads);
int bn_stream_dot(const float *x, const float *z, int64_t n, double *out, int nthreads);
int bn_stream_fill(float *y, int64_t n, float v, int nontemporal, int nthreads);
int bn_stream_copy(const float *x, float *y, int64_t n, int nontemporal, int nthreads);
int bn_stream_scale(const float *x, float *y, int64_t n, float a, int nontemporal, int nthreads);
int bn_stream_add(const float *x, const float *z, float *y, int64_t n, int nontemporal, int nthreads);
int bn_stream_triad(const float *x, const float *z, float *y, int64_t n, float a, int nontemporal, int nthreads);
#endif
