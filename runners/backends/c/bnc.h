/* bnconform's C BatchNorm kernels: contiguous (N, C, S) data, S = product of spatial sizes.
 *
 * Every entry point checks its pointers and sizes before touching memory and returns a
 * BN_* code; bn_strerror() turns it into text. Statistics accumulate in double for both
 * dtypes. The module semantics around these kernels live in Python (KernelModule).
 */
#ifndef BNC_H
#define BNC_H
#include <stdint.h>

#define BN_OK 0
#define BN_ERR_NULL 1      /* a required pointer is NULL */
#define BN_ERR_SHAPE 2     /* N, C or S negative, or N*C*S overflows */
#define BN_ERR_SIZE 3      /* a buffer length disagrees with N, C, S */
#define BN_ERR_EPS 4       /* eps negative (or not finite) */
#define BN_ERR_COUNT 5     /* running variance update with fewer than 2 values per channel */
#define BN_ERR_THREADS 6   /* thread count < 1 */

const char *bn_strerror(int code);
int bn_openmp_enabled(void);

/* Training forward: batch mean and biased variance per channel (two-pass per plane, planes
 * merged with Chan's formula), y = (x - mean) * invstd * w + b. save_mean/save_invstd get the
 * statistics (double). If running_mean/var are given they are updated in place with
 * `factor` and the unbiased variance. weight/bias may be NULL (affine=False). */
int bn_forward_train_f32(const float *x, int64_t x_len, float *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S,
                         const float *weight, const float *bias, float *running_mean, float *running_var,
                         int64_t c_len, double factor, double eps,
                         double *save_mean, double *save_invstd, int nthreads);
int bn_forward_train_f64(const double *x, int64_t x_len, double *y, int64_t y_len,
                         int64_t N, int64_t C, int64_t S,
                         const double *weight, const double *bias, double *running_mean, double *running_var,
                         int64_t c_len, double factor, double eps,
                         double *save_mean, double *save_invstd, int nthreads);

/* Eval forward from running statistics. */
int bn_forward_eval_f32(const float *x, int64_t x_len, float *y, int64_t y_len,
                        int64_t N, int64_t C, int64_t S,
                        const float *weight, const float *bias, const float *running_mean, const float *running_var,
                        int64_t c_len, double eps, int nthreads);
int bn_forward_eval_f64(const double *x, int64_t x_len, double *y, int64_t y_len,
                        int64_t N, int64_t C, int64_t S,
                        const double *weight, const double *bias, const double *running_mean, const double *running_var,
                        int64_t c_len, double eps, int nthreads);

/* Backward through batch statistics: dx, and per-channel dweight = sum dy*xhat, dbias = sum dy. */
int bn_backward_train_f32(const float *dy, int64_t dy_len, const float *x, float *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, const float *weight,
                          const double *save_mean, const double *save_invstd,
                          float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_train_f64(const double *dy, int64_t dy_len, const double *x, double *dx, int64_t x_len,
                          int64_t N, int64_t C, int64_t S, const double *weight,
                          const double *save_mean, const double *save_invstd,
                          double *dweight, double *dbias, int64_t c_len, int nthreads);

/* Backward with running statistics as constants. */
int bn_backward_eval_f32(const float *dy, int64_t dy_len, const float *x, float *dx, int64_t x_len,
                         int64_t N, int64_t C, int64_t S, const float *weight,
                         const float *running_mean, const float *running_var, double eps,
                         float *dweight, float *dbias, int64_t c_len, int nthreads);
int bn_backward_eval_f64(const double *dy, int64_t dy_len, const double *x, double *dx, int64_t x_len,
                         int64_t N, int64_t C, int64_t S, const double *weight,
                         const double *running_mean, const double *running_var, double eps,
                         double *dweight, double *dbias, int64_t c_len, int nthreads);
#endif
