/* One dtype's kernels; bnc.c includes this file once per dtype with T and SFX defined.
 *
 * Two layouts of work, chosen by S (values per (n, c) plane):
 *  - plane path (S >= PLANE_MIN): threads take channels; each channel is a run of N
 *    contiguous planes. Statistics are two-pass inside a plane (it sits in L1/L2 for the
 *    second pass) and planes are merged with Chan's formula, so x is read from memory
 *    once for the statistics and once for the output: the minimal traffic.
 *  - position path (small S, e.g. (N, C) input): threads take blocks of channels and
 *    accumulate per (c, s) position over n, contiguous in memory, then reduce over s.
 *    Statistics are an exact two-pass over the channel (the data is small).
 * All arithmetic on statistics is in double; loops carry `omp simd` so they vectorise
 * without -ffast-math.
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* Per-channel mean and biased variance of channel c (plane path). */
static void FN(plane_stats)(const T *restrict x, int64_t N, int64_t C, int64_t S, int64_t c,
                            double *mean_out, double *var_out) {
    double mean = 0.0, m2 = 0.0;
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict p = x + (n * C + c) * S;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < S; ++i) s += (double)p[i];
        const double pm = s / (double)S;
        double q = 0.0;
#pragma omp simd reduction(+ : q)
        for (int64_t i = 0; i < S; ++i) {
            const double d = (double)p[i] - pm;
            q += d * d;
        }
        const int64_t total = count + S;
        const double delta = pm - mean;
        mean += delta * (double)S / (double)total;
        m2 += q + delta * delta * (double)count * (double)S / (double)total;
        count = total;
    }
    *mean_out = mean;
    *var_out = count > 0 ? m2 / (double)count : 0.0;
}

/* Mean and biased variance of channels [c0, c1) (position path); acc holds 2*(c1-c0)*S doubles. */
static void FN(block_stats)(const T *restrict x, int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1,
                            double *restrict acc, double *restrict mean, double *restrict var) {
    const int64_t width = (c1 - c0) * S;
    const double n_total = (double)(N * S);
    for (int64_t j = 0; j < width; ++j) acc[j] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict row = x + (n * C + c0) * S;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) acc[j] += (double)row[j];
    }
    for (int64_t c = c0; c < c1; ++c) {
        double s = 0.0;
        for (int64_t i = 0; i < S; ++i) s += acc[(c - c0) * S + i];
        mean[c] = s / n_total;
    }
    double *restrict mexp = acc + width; /* the channel mean at every (c, s) position */
    for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < S; ++i) mexp[(c - c0) * S + i] = mean[c];
    for (int64_t j = 0; j < width; ++j) acc[j] = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict row = x + (n * C + c0) * S;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) {
            const double d = (double)row[j] - mexp[j];
            acc[j] += d * d;
        }
    }
    for (int64_t c = c0; c < c1; ++c) {
        double s = 0.0;
        for (int64_t i = 0; i < S; ++i) s += acc[(c - c0) * S + i];
        var[c] = s / n_total;
    }
}

/* q[i] = (p[i] - m) * a + b. With `stream`, the stores bypass the cache (no read-for-ownership
 * of the output): worth it once input and output no longer fit in the last-level cache. */
static inline void FN(norm_run)(const T *restrict p, T *restrict q, int64_t len, T m, T a, T b, int stream) {
    int64_t i = 0;
#if defined(BNC_STREAM_WIDTH)
    if (stream) {
        for (; i < len && ((uintptr_t)(q + i) % 64) != 0; ++i) q[i] = (p[i] - m) * a + b;
        for (; i + BNC_STREAM_WIDTH <= len; i += BNC_STREAM_WIDTH) BNC_STREAM(p + i, q + i, m, a, b);
    }
#else
    (void)stream;
#endif
#pragma omp simd
    for (int64_t j = i; j < len; ++j) q[j] = (p[j] - m) * a + b;
}

/* y = (x - m[c]) * a[c] + b[c] in the data type: the subtraction is exact for x near m, so
 * float32 keeps torch's accuracy while using full-width vectors. Large planes are split across
 * threads plane by plane; small ones row by row (n), the channel loop inside. */
static void FN(affine_map)(const T *restrict x, T *restrict y, int64_t N, int64_t C, int64_t S,
                           const T *restrict m, const T *restrict a, const T *restrict b, int nt) {
    if (S >= PLANE_MIN) {
        const int64_t planes = N * C;
        const int stream = (double)planes * (double)S * sizeof(T) * 2 > STREAM_MIN_BYTES;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t pl = 0; pl < planes; ++pl) {
            const int64_t c = pl % C;
            FN(norm_run)(x + pl * S, y + pl * S, S, m[c], a[c], b[c], stream);
        }
#if defined(BNC_STREAM_WIDTH)
        if (stream) _mm_sfence();
#endif
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict p = x + n * C * S;
        T *restrict q = y + n * C * S;
        if (S == 1) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) q[c] = (p[c] - m[c]) * a[c] + b[c];
        } else {
            for (int64_t c = 0; c < C; ++c) {
                const T mc = m[c], ac = a[c], bc = b[c];
#pragma omp simd
                for (int64_t i = 0; i < S; ++i) q[c * S + i] = (p[c * S + i] - mc) * ac + bc;
            }
        }
    }
}

/* Channels per block on the position path: enough blocks for every thread, accumulators in cache. */
static int64_t FN(block_channels)(int64_t C, int64_t S, int nt) {
    if (S <= 0) return C > 0 ? C : 1; /* empty planes: nothing to accumulate */
    int64_t block = S >= BLOCK_WIDTH ? 1 : BLOCK_WIDTH / S;
    const int64_t fair = (C + nt - 1) / nt;
    if (block > fair) block = fair;
    return block < 1 ? 1 : block;
}

/* y = (x - m[c]) * a[c] + b[c] for channels [c0, c1) only, every n. */
static void FN(block_normalize)(const T *restrict x, T *restrict y, int64_t N, int64_t C, int64_t S, int64_t c0,
                                int64_t c1, const T *restrict m, const T *restrict a, const T *restrict b, int stream) {
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict p = x + (n * C + c0) * S;
        T *restrict q = y + (n * C + c0) * S;
        if (S == 1) {
            const int64_t w = c1 - c0;
            const T *restrict mm = m + c0, *restrict aa = a + c0, *restrict bb = b + c0;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) q[j] = (p[j] - mm[j]) * aa[j] + bb[j];
            continue;
        }
        for (int64_t c = c0; c < c1; ++c) FN(norm_run)(p + (c - c0) * S, q + (c - c0) * S, S, m[c], a[c], b[c], stream);
    }
#if defined(BNC_STREAM_WIDTH)
    if (stream) _mm_sfence();
#endif
}

static int FN(check_x)(const void *x, int64_t x_len, const void *y, int64_t y_len, int64_t N, int64_t C, int64_t S) {
    if (!x || !y) return BN_ERR_NULL;
    if (N < 0 || C < 0 || S < 0) return BN_ERR_SHAPE;
    if (C > 0 && S > 0 && N > INT64_MAX / C / S) return BN_ERR_SHAPE;
    if (x_len != N * C * S || y_len != N * C * S) return BN_ERR_SIZE;
    return BN_OK;
}

int FN(bn_forward_train_)(const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S,
                          const T *weight, const T *bias, T *running_mean, T *running_var, int64_t c_len,
                          double factor, double eps, double *save_mean, double *save_invstd, int nthreads) {
    int rc = FN(check_x)(x, x_len, y, y_len, N, C, S);
    if (rc) return rc;
    if (!save_mean || !save_invstd) return BN_ERR_NULL;
    if (c_len != C) return BN_ERR_SIZE;
    if (!(eps >= 0.0) || eps != eps || eps > 1e300) return BN_ERR_EPS;
    if (nthreads < 1) return BN_ERR_THREADS;
    if ((running_mean == NULL) != (running_var == NULL)) return BN_ERR_NULL;
    const int64_t n = N * S;
    if (running_mean && n == 1) return BN_ERR_COUNT;
    if (n == 0) { /* nothing to normalise; statistics undefined, buffers untouched */
        for (int64_t c = 0; c < C; ++c) save_mean[c] = save_invstd[c] = NAN;
        return BN_OK;
    }
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    double *var = (double *)malloc(sizeof(double) * (size_t)C + sizeof(T) * (size_t)(3 * C) + 1);
    if (!var) return BN_ERR_NULL;
    T *m = (T *)(var + C), *a = m + C, *b = m + 2 * C;
    /* One pass of work per block of channels, each thread on its own channels: statistics,
     * then the output while the block's data is still in this core's cache. */
    const int64_t block = S >= PLANE_MIN ? 1 : FN(block_channels)(C, S, nt);
    const int64_t nblocks = (C + block - 1) / block;
    const int stream = (double)N * (double)C * (double)S * sizeof(T) * 2 > STREAM_MIN_BYTES;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double *acc = S >= PLANE_MIN ? NULL : (double *)malloc(sizeof(double) * (size_t)(2 * block * S));
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nblocks; ++bi) {
            const int64_t c0 = bi * block, c1 = c0 + block < C ? c0 + block : C;
            if (acc)
                FN(block_stats)(x, N, C, S, c0, c1, acc, save_mean, var);
            else
                for (int64_t c = c0; c < c1; ++c) FN(plane_stats)(x, N, C, S, c, &save_mean[c], &var[c]);
            for (int64_t c = c0; c < c1; ++c) {
                const double invstd = 1.0 / sqrt(var[c] + eps);
                const double w = weight ? (double)weight[c] : 1.0;
                save_invstd[c] = invstd;
                m[c] = (T)save_mean[c];
                a[c] = (T)(w * invstd);
                b[c] = bias ? bias[c] : (T)0;
                if (running_mean) {
                    const double unbiased = var[c] * (double)n / (double)(n - 1);
                    running_mean[c] = (T)((1.0 - factor) * (double)running_mean[c] + factor * save_mean[c]);
                    running_var[c] = (T)((1.0 - factor) * (double)running_var[c] + factor * unbiased);
                }
            }
            FN(block_normalize)(x, y, N, C, S, c0, c1, m, a, b, stream);
        }
        free(acc);
    }
    free(var);
    return BN_OK;
}

int FN(bn_forward_eval_)(const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S,
                         const T *weight, const T *bias, const T *running_mean, const T *running_var,
                         int64_t c_len, double eps, int nthreads) {
    int rc = FN(check_x)(x, x_len, y, y_len, N, C, S);
    if (rc) return rc;
    if (!running_mean || !running_var) return BN_ERR_NULL;
    if (c_len != C) return BN_ERR_SIZE;
    if (!(eps >= 0.0)) return BN_ERR_EPS;
    if (nthreads < 1) return BN_ERR_THREADS;
    T *a = (T *)malloc(sizeof(T) * (size_t)(2 * C + 1));
    if (!a) return BN_ERR_NULL;
    T *b = a + C;
    for (int64_t c = 0; c < C; ++c) {
        const double w = weight ? (double)weight[c] : 1.0;
        a[c] = (T)(w / sqrt((double)running_var[c] + eps));
        b[c] = bias ? bias[c] : (T)0;
    }
    FN(affine_map)(x, y, N, C, S, running_mean, a, b, N * C * S < PARALLEL_MIN ? 1 : nthreads);
    free(a);
    return BN_OK;
}

/* Per-channel sum dy and sum dy*(x - center); then dx = dy*k1[c] + x*k2[c] + k3[c]. */
static void FN(sums_dy)(const T *restrict dy, const T *restrict x, int64_t N, int64_t C, int64_t S,
                        const double *restrict center, double *restrict sum_dy, double *restrict sum_dyx, int nt) {
    if (S >= PLANE_MIN) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t c = 0; c < C; ++c) {
            double s1 = 0.0, s2 = 0.0;
            const double m = center[c];
            for (int64_t n = 0; n < N; ++n) {
                const T *restrict g = dy + (n * C + c) * S;
                const T *restrict p = x + (n * C + c) * S;
#pragma omp simd reduction(+ : s1, s2)
                for (int64_t i = 0; i < S; ++i) {
                    s1 += (double)g[i];
                    s2 += (double)g[i] * ((double)p[i] - m);
                }
            }
            sum_dy[c] = s1;
            sum_dyx[c] = s2;
        }
        return;
    }
    const int64_t block = FN(block_channels)(C, S, nt);
    const int64_t nblocks = (C + block - 1) / block;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double *acc = (double *)malloc(sizeof(double) * (size_t)(3 * block * S + 1));
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nblocks; ++bi) {
            const int64_t c0 = bi * block, c1 = c0 + block < C ? c0 + block : C;
            const int64_t width = (c1 - c0) * S;
            if (!acc) { /* out of memory: plain per-channel loops */
                for (int64_t c = c0; c < c1; ++c) {
                    double s1 = 0.0, s2 = 0.0;
                    for (int64_t n = 0; n < N; ++n)
                        for (int64_t i = 0; i < S; ++i) {
                            const int64_t k = (n * C + c) * S + i;
                            s1 += (double)dy[k];
                            s2 += (double)dy[k] * ((double)x[k] - center[c]);
                        }
                    sum_dy[c] = s1;
                    sum_dyx[c] = s2;
                }
                continue;
            }
            double *restrict a1 = acc, *restrict a2 = acc + width, *restrict mexp = acc + 2 * width;
            for (int64_t c = c0; c < c1; ++c)
                for (int64_t i = 0; i < S; ++i) mexp[(c - c0) * S + i] = center[c];
            for (int64_t j = 0; j < 2 * width; ++j) acc[j] = 0.0;
            for (int64_t n = 0; n < N; ++n) {
                const T *restrict g = dy + (n * C + c0) * S;
                const T *restrict p = x + (n * C + c0) * S;
#pragma omp simd
                for (int64_t j = 0; j < width; ++j) {
                    a1[j] += (double)g[j];
                    a2[j] += (double)g[j] * ((double)p[j] - mexp[j]);
                }
            }
            for (int64_t c = c0; c < c1; ++c) {
                double s1 = 0.0, s2 = 0.0;
                for (int64_t i = 0; i < S; ++i) {
                    s1 += a1[(c - c0) * S + i];
                    s2 += a2[(c - c0) * S + i];
                }
                sum_dy[c] = s1;
                sum_dyx[c] = s2;
            }
        }
        free(acc);
    }
}

/* dx = dy*k1[c] + (x - m[c])*k2[c] + k3[c] in the data type; x may be NULL (then dx = dy*k1 + k3). */
static inline void FN(dx_run)(const T *restrict g, const T *restrict p, T *restrict q, int64_t len,
                              T m, T k1, T k2, T k3) {
    if (p) {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) q[i] = g[i] * k1 + (p[i] - m) * k2 + k3;
    } else {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) q[i] = g[i] * k1 + k3;
    }
}

static void FN(dx_map)(const T *restrict dy, const T *restrict x, T *restrict dx, int64_t N, int64_t C, int64_t S,
                       const T *restrict m, const T *restrict k1, const T *restrict k2, const T *restrict k3, int nt) {
    if (S >= PLANE_MIN) {
        const int64_t planes = N * C;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t pl = 0; pl < planes; ++pl) {
            const int64_t c = pl % C;
            FN(dx_run)(dy + pl * S, x ? x + pl * S : NULL, dx + pl * S, S, m[c], k1[c], k2[c], k3[c]);
        }
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict g = dy + n * C * S;
        const T *restrict p = x ? x + n * C * S : NULL;
        T *restrict q = dx + n * C * S;
        if (S == 1 && p) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) q[c] = g[c] * k1[c] + (p[c] - m[c]) * k2[c] + k3[c];
        } else {
            for (int64_t c = 0; c < C; ++c)
                FN(dx_run)(g + c * S, p ? p + c * S : NULL, q + c * S, S, m[c], k1[c], k2[c], k3[c]);
        }
    }
}

static int FN(check_bwd)(const void *dy, int64_t dy_len, const void *x, const void *dx, int64_t x_len, int64_t N, int64_t C,
                         int64_t S, const void *dweight, const void *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_x)(x, x_len, dx, x_len, N, C, S);
    if (rc) return rc;
    if (!dy || !dweight || !dbias) return BN_ERR_NULL;
    if (dy_len != x_len) return BN_ERR_SIZE;
    if (c_len != C) return BN_ERR_SIZE;
    if (nthreads < 1) return BN_ERR_THREADS;
    return BN_OK;
}

int FN(bn_backward_train_)(const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, int64_t S,
                           const T *weight, const double *save_mean, const double *save_invstd,
                           T *dweight, T *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_bwd)(dy, dy_len, x, dx, x_len, N, C, S, dweight, dbias, c_len, nthreads);
    if (rc) return rc;
    if (!save_mean || !save_invstd) return BN_ERR_NULL;
    const int64_t n = N * S;
    double *buf = (double *)malloc(sizeof(double) * (size_t)(2 * C) + sizeof(T) * (size_t)(4 * C) + 1);
    if (!buf) return BN_ERR_NULL;
    double *sdy = buf, *sdyx = buf + C;
    T *m = (T *)(buf + 2 * C), *k1 = m + C, *k2 = m + 2 * C, *k3 = m + 3 * C;
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    FN(sums_dy)(dy, x, N, C, S, save_mean, sdy, sdyx, nt);
    for (int64_t c = 0; c < C; ++c) {
        const double w = weight ? (double)weight[c] : 1.0, is = save_invstd[c];
        const double sum_dy_xhat = sdyx[c] * is;
        dweight[c] = (T)sum_dy_xhat;
        dbias[c] = (T)sdy[c];
        if (n > 0) { /* dx = w*is*(dy - sum_dy/n - xhat*sum_dy_xhat/n) */
            m[c] = (T)save_mean[c];
            k1[c] = (T)(w * is);
            k2[c] = (T)(-w * is * is * sum_dy_xhat / (double)n);
            k3[c] = (T)(-w * is * sdy[c] / (double)n);
        }
    }
    if (n > 0) FN(dx_map)(dy, x, dx, N, C, S, m, k1, k2, k3, nt);
    free(buf);
    return BN_OK;
}

int FN(bn_backward_eval_)(const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, int64_t S,
                          const T *weight, const T *running_mean, const T *running_var, double eps,
                          T *dweight, T *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_bwd)(dy, dy_len, x, dx, x_len, N, C, S, dweight, dbias, c_len, nthreads);
    if (rc) return rc;
    if (!running_mean || !running_var) return BN_ERR_NULL;
    if (!(eps >= 0.0)) return BN_ERR_EPS;
    double *buf = (double *)calloc(1, sizeof(double) * (size_t)(3 * C) + sizeof(T) * (size_t)(2 * C) + 1);
    if (!buf) return BN_ERR_NULL;
    double *center = buf, *sdy = buf + C, *sdyx = buf + 2 * C;
    T *k1 = (T *)(buf + 3 * C), *zero = k1 + C;
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    for (int64_t c = 0; c < C; ++c) {
        center[c] = (double)running_mean[c];
        k1[c] = (T)((weight ? (double)weight[c] : 1.0) / sqrt((double)running_var[c] + eps));
        zero[c] = (T)0;
    }
    FN(sums_dy)(dy, x, N, C, S, center, sdy, sdyx, nt);
    for (int64_t c = 0; c < C; ++c) {
        dweight[c] = (T)(sdyx[c] / sqrt((double)running_var[c] + eps));
        dbias[c] = (T)sdy[c];
    }
    FN(dx_map)(dy, NULL, dx, N, C, S, zero, k1, zero, zero, nt); /* dx = dy * k1 */
    free(buf);
    return BN_OK;
}

#undef FN
#undef CAT
#undef CAT_
