/* One data type's kernels; bnc.c includes this file once per type with these defined:
 *   T       storage type of x, y, dy, dx (float, double, or uint16_t for float16/bfloat16)
 *   P       per-channel type (weight, bias, running buffers, dweight, dbias) and the type the
 *           element-wise maps compute in: T for f32/f64, float for the 16-bit types
 *   LD(v)   storage value -> P (exact);  ST(v)  P -> storage (round to nearest even)
 *   SFX     the entry points' suffix;    BNC_STREAM (optional, f32/f64) a streaming-store step
 *
 * Contiguous NCHW: two layouts of work, chosen by S (values per (n, c) plane):
 *  - plane path (S >= PLANE_MIN): threads take channels; each channel is a run of N
 *    contiguous planes. Statistics are two-pass inside a plane (it sits in L1/L2 for the
 *    second pass) and planes are merged with Chan's formula, so x is read from memory
 *    once for the statistics and once for the output: the minimal traffic.
 *  - position path (small S, e.g. (N, C) input): threads take blocks of channels and
 *    accumulate per (c, s) position over n, contiguous in memory, then reduce over s.
 *    Statistics are an exact two-pass over the channel (the data is small).
 * channels_last (NHWC, R = N*S rows of C contiguous values): the rows are cut into chunks and
 *    the channels into tiles (bnc_cl_make_plan, independent of the thread count); each
 *    (chunk, tile) unit does two-pass statistics per block of rows (in cache for the second
 *    pass), merged with Chan's formula, and the chunks are merged in order at the end. The
 *    element-wise maps walk the rows with per-channel coefficient vectors.
 * All arithmetic on statistics is in double; loops carry `omp simd` so they vectorise
 * without -ffast-math.
 */
#define FN(name) CAT(name, SFX)

#if defined(BNC_STREAM_WIDTH) && defined(BNC_STREAM)
#define BNC_USE_STREAM 1
#endif

/* 16-bit types (BNC_WIDEN and BNC_NARROW defined: storage <-> P on n values, at the vector width
 * and with the conversion instructions of the instruction set in use): the plane loops below widen
 * runs of BNC_RUN values into a buffer on the stack and compute on it, so the arithmetic is the
 * float32 path's and the conversion costs a few instructions per vector. */
#if defined(BNC_WIDEN)
#define BNC_RUN 512
#endif
#define BNC_ACC 32

/* Sum of v - m (and with q, of its square) over v[0, n) in double, into BNC_ACC partial sums each:
 * independent accumulators keep the adds from waiting on each other, and the order of the sums is
 * fixed by the index, not by the vector width, so every instruction set gives the same bits. */
static inline void FN(dev_run)(const P *restrict v, int64_t n, double m, double *restrict as, double *restrict aq,
                               int q) {
    int64_t i = 0;
    for (; i + BNC_ACC <= n; i += BNC_ACC) {
        if (q) {
#pragma omp simd
            for (int64_t j = 0; j < BNC_ACC; ++j) {
                const double d = (double)v[i + j] - m;
                as[j] += d;
                aq[j] += d * d;
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < BNC_ACC; ++j) as[j] += (double)v[i + j] - m;
        }
    }
    for (int64_t j = 0; i < n; ++i, ++j) {
        const double d = (double)v[i] - m;
        as[j] += d;
        if (q) aq[j] += d * d;
    }
}

static inline double FN(acc_total)(const double *restrict a) {
    double t = 0.0;
    for (int64_t j = 0; j < BNC_ACC; ++j) t += a[j];
    return t;
}

/* Sum of (x - m) and, with q, of its square over p[0, len) in double. */
static inline void FN(dev_sums)(const T *restrict p, int64_t len, double m, double *s_out, double *q_out, int q) {
    double as[BNC_ACC] = {0.0}, aq[BNC_ACC] = {0.0};
#if defined(BNC_WIDEN)
    P buf[BNC_RUN];
    for (int64_t i0 = 0; i0 < len; i0 += BNC_RUN) {
        const int64_t n = len - i0 < BNC_RUN ? len - i0 : BNC_RUN;
        BNC_WIDEN(p + i0, buf, n);
        FN(dev_run)(buf, n, m, as, aq, q);
    }
#else
    FN(dev_run)(p, len, m, as, aq, q);
#endif
    *s_out = FN(acc_total)(as);
    *q_out = q ? FN(acc_total)(aq) : 0.0;
}

/* Per (n, c) plane of the backward: sum dy and sum dy*(x - m), accumulated into BNC_ACC partials. */
static inline void FN(dy_run)(const P *restrict g, const P *restrict v, int64_t n, double m, double *restrict a1,
                              double *restrict a2) {
    int64_t i = 0;
    for (; i + BNC_ACC <= n; i += BNC_ACC) {
#pragma omp simd
        for (int64_t j = 0; j < BNC_ACC; ++j) {
            const double gj = (double)g[i + j];
            a1[j] += gj;
            a2[j] += gj * ((double)v[i + j] - m);
        }
    }
    for (int64_t j = 0; i < n; ++i, ++j) {
        const double gj = (double)g[i];
        a1[j] += gj;
        a2[j] += gj * ((double)v[i] - m);
    }
}

/* A plane's mean to P's precision (partial sums in P, added in double): only an estimate, which the
 * second pass corrects exactly, so it may be as cheap as the loads. */
static inline double FN(plane_mean_estimate)(const T *restrict p, int64_t len) {
    P acc[BNC_ACC] = {(P)0};
#if defined(BNC_WIDEN)
    P buf[BNC_RUN];
    for (int64_t i0 = 0; i0 < len; i0 += BNC_RUN) {
        const int64_t n = len - i0 < BNC_RUN ? len - i0 : BNC_RUN;
        BNC_WIDEN(p + i0, buf, n);
        const P *restrict v = buf;
#else
    {
        const int64_t n = len;
        const P *restrict v = p;
#endif
        int64_t i = 0;
        for (; i + BNC_ACC <= n; i += BNC_ACC) {
#pragma omp simd
            for (int64_t j = 0; j < BNC_ACC; ++j) acc[j] += v[i + j];
        }
        for (int64_t j = 0; i < n; ++i, ++j) acc[j] += v[i];
    }
    double t = 0.0;
    for (int64_t j = 0; j < BNC_ACC; ++j) t += (double)acc[j];
    return t / (double)len;
}

/* Per-channel mean and biased variance of channel c (plane path). Each plane: a first pass for an
 * estimate m of its mean, then a second for the deviations from it in double, whose sum s and sum
 * of squares q give the exact mean m + s/S and squared deviation q - s*s/S (the corrected
 * two-pass algorithm: m's error cancels); planes merged with Chan's formula. */
static void FN(plane_stats)(const T *restrict x, int64_t N, int64_t C, int64_t S, int64_t c,
                            double *mean_out, double *var_out) {
    double mean = 0.0, m2 = 0.0;
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict p = x + (n * C + c) * S;
        double s, q;
        double pm = FN(plane_mean_estimate)(p, S);
        if (!isfinite(pm)) { /* the estimate overflowed P: take it in double */
            FN(dev_sums)(p, S, 0.0, &s, &q, 0);
            pm = s / (double)S;
        }
        FN(dev_sums)(p, S, pm, &s, &q, 1);
        pm += s / (double)S;
        q -= s * s / (double)S;
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
        for (int64_t j = 0; j < width; ++j) acc[j] += (double)LD(row[j]);
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
            const double d = (double)LD(row[j]) - mexp[j];
            acc[j] += d * d;
        }
    }
    for (int64_t c = c0; c < c1; ++c) {
        double s = 0.0;
        for (int64_t i = 0; i < S; ++i) s += acc[(c - c0) * S + i];
        var[c] = s / n_total;
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

/* Mean and biased variance of every channel, NCHW (N*S >= 1). */
static int FN(nchw_stats)(const T *restrict x, int64_t N, int64_t C, int64_t S, double *restrict mean,
                          double *restrict var, int nt) {
    const int64_t block = S >= PLANE_MIN ? 1 : FN(block_channels)(C, S, nt);
    const int64_t nblocks = (C + block - 1) / block;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double *acc = S >= PLANE_MIN ? NULL : (double *)malloc(sizeof(double) * (size_t)(2 * block * S));
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nblocks; ++bi) {
            const int64_t c0 = bi * block, c1 = c0 + block < C ? c0 + block : C;
            if (acc)
                FN(block_stats)(x, N, C, S, c0, c1, acc, mean, var);
            else
                for (int64_t c = c0; c < c1; ++c) FN(plane_stats)(x, N, C, S, c, &mean[c], &var[c]);
        }
        free(acc);
    }
    return BN_OK;
}

/* Mean and biased variance of every channel, channels_last: R >= 1 rows of C values. Returns
 * BN_ERR_NULL if the partial results cannot be allocated. */
static int FN(cl_stats)(const T *restrict x, int64_t R, int64_t C, double *restrict mean, double *restrict var, int nt) {
    if (C == 0) return BN_OK;
    const bnc_cl_plan pl = bnc_cl_make_plan(R, C);
    /* Partial (mean, m2) per (chunk, channel), then per-thread scratch: a block's sums and squares. */
    double *buf = (double *)malloc(sizeof(double) * (size_t)(2 * pl.K * C + 2 * pl.W * nt));
    if (!buf) return BN_ERR_NULL;
    double *part_mean = buf, *part_m2 = buf + pl.K * C;
    const int64_t units = pl.K * pl.tiles;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double *restrict bs = buf + 2 * pl.K * C + 2 * pl.W * BNC_TID();
        double *restrict bq = bs + pl.W;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t k = u / pl.tiles, t = u % pl.tiles;
            const int64_t r0 = k * pl.CR, r1 = r0 + pl.CR < R ? r0 + pl.CR : R;
            const int64_t c0 = t * pl.W, w = c0 + pl.W < C ? pl.W : C - c0;
            double *restrict mu = part_mean + k * C + c0, *restrict m2 = part_m2 + k * C + c0;
            int64_t count = 0;
            for (int64_t j = 0; j < w; ++j) mu[j] = m2[j] = 0.0;
            for (int64_t b0 = r0; b0 < r1; b0 += pl.BR) {
                const int64_t b1 = b0 + pl.BR < r1 ? b0 + pl.BR : r1, nb = b1 - b0;
                for (int64_t j = 0; j < w; ++j) bs[j] = bq[j] = 0.0;
                for (int64_t r = b0; r < b1; ++r) {
                    const T *restrict row = x + r * C + c0;
#pragma omp simd
                    for (int64_t j = 0; j < w; ++j) bs[j] += (double)LD(row[j]);
                }
                for (int64_t j = 0; j < w; ++j) bs[j] /= (double)nb; /* the block's mean */
                for (int64_t r = b0; r < b1; ++r) {
                    const T *restrict row = x + r * C + c0;
#pragma omp simd
                    for (int64_t j = 0; j < w; ++j) {
                        const double d = (double)LD(row[j]) - bs[j];
                        bq[j] += d * d;
                    }
                }
                const int64_t total = count + nb;
                const double f1 = (double)nb / (double)total, f2 = (double)count * (double)nb / (double)total;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) { /* Chan: merge the block into the chunk */
                    const double delta = bs[j] - mu[j];
                    mu[j] += delta * f1;
                    m2[j] += bq[j] + delta * delta * f2;
                }
                count = total;
            }
        }
        /* Merge the chunks in order (the same order whatever the thread count). */
#pragma omp for schedule(static)
        for (int64_t c = 0; c < C; ++c) {
            double mu = part_mean[c], m2 = part_m2[c];
            int64_t count = pl.CR < R ? pl.CR : R;
            for (int64_t k = 1; k < pl.K; ++k) {
                const int64_t nk = (k + 1) * pl.CR < R ? pl.CR : R - k * pl.CR, total = count + nk;
                const double delta = part_mean[k * C + c] - mu;
                mu += delta * (double)nk / (double)total;
                m2 += part_m2[k * C + c] + delta * delta * (double)count * (double)nk / (double)total;
                count = total;
            }
            mean[c] = mu;
            var[c] = m2 / (double)count;
        }
    }
    free(buf);
    return BN_OK;
}

/* q[i] = (p[i] - m) * a + b. With `stream`, the stores bypass the cache (no read-for-ownership
 * of the output): worth it once input and output no longer fit in the last-level cache. */
static inline void FN(norm_run)(const T *restrict p, T *restrict q, int64_t len, P m, P a, P b, int stream) {
    int64_t i = 0;
#if defined(BNC_USE_STREAM)
    if (stream) {
        for (; i < len && ((uintptr_t)(q + i) % 64) != 0; ++i) q[i] = ST((LD(p[i]) - m) * a + b);
        for (; i + BNC_STREAM_WIDTH <= len; i += BNC_STREAM_WIDTH) BNC_STREAM(p + i, q + i, m, a, b);
    }
#else
    (void)stream;
#endif
#if defined(BNC_WIDEN)
    P buf[BNC_RUN];
    for (; i < len; i += BNC_RUN) {
        const int64_t n = len - i < BNC_RUN ? len - i : BNC_RUN;
        BNC_WIDEN(p + i, buf, n);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) buf[j] = (buf[j] - m) * a + b;
        BNC_NARROW(buf, q + i, n);
    }
#else
#pragma omp simd
    for (int64_t j = i; j < len; ++j) q[j] = ST((LD(p[j]) - m) * a + b);
#endif
}

/* y = (x - m[c]) * a[c] + b[c] in P: the subtraction is exact for x near m, so float32 keeps
 * torch's accuracy while using full-width vectors. Large planes are split across threads plane
 * by plane; small ones row by row (n), the channel loop inside. */
static void FN(affine_map)(const T *restrict x, T *restrict y, int64_t N, int64_t C, int64_t S,
                           const P *restrict m, const P *restrict a, const P *restrict b, int nt) {
    (void)nt; /* unused without OpenMP */
    if (S >= PLANE_MIN) {
        const int64_t planes = N * C;
        const int stream = (double)planes * (double)S * sizeof(T) * 2 > STREAM_MIN_BYTES;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t pl = 0; pl < planes; ++pl) {
            const int64_t c = pl % C;
            FN(norm_run)(x + pl * S, y + pl * S, S, m[c], a[c], b[c], stream);
        }
#if defined(BNC_USE_STREAM)
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
            for (int64_t c = 0; c < C; ++c) q[c] = ST((LD(p[c]) - m[c]) * a[c] + b[c]);
        } else {
            for (int64_t c = 0; c < C; ++c) {
                const P mc = m[c], ac = a[c], bc = b[c];
#pragma omp simd
                for (int64_t i = 0; i < S; ++i) q[c * S + i] = ST((LD(p[c * S + i]) - mc) * ac + bc);
            }
        }
    }
}

/* The same map, channels_last: R rows of C values, per-channel coefficient vectors. */
static void FN(cl_affine_map)(const T *restrict x, T *restrict y, int64_t R, int64_t C,
                              const P *restrict m, const P *restrict a, const P *restrict b, int nt) {
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < R; ++r) {
        const T *restrict p = x + r * C;
        T *restrict q = y + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) q[c] = ST((LD(p[c]) - m[c]) * a[c] + b[c]);
    }
}

/* y = (x - m[c]) * a[c] + b[c] for channels [c0, c1) only, every n. */
static void FN(block_normalize)(const T *restrict x, T *restrict y, int64_t N, int64_t C, int64_t S, int64_t c0,
                                int64_t c1, const P *restrict m, const P *restrict a, const P *restrict b, int stream) {
    for (int64_t n = 0; n < N; ++n) {
        const T *restrict p = x + (n * C + c0) * S;
        T *restrict q = y + (n * C + c0) * S;
        if (S == 1) {
            const int64_t w = c1 - c0;
            const P *restrict mm = m + c0, *restrict aa = a + c0, *restrict bb = b + c0;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) q[j] = ST((LD(p[j]) - mm[j]) * aa[j] + bb[j]);
            continue;
        }
        for (int64_t c = c0; c < c1; ++c) FN(norm_run)(p + (c - c0) * S, q + (c - c0) * S, S, m[c], a[c], b[c], stream);
    }
#if defined(BNC_USE_STREAM)
    if (stream) _mm_sfence();
#endif
}

static int FN(check_x)(const void *x, int64_t x_len, const void *y, int64_t y_len, int64_t N, int64_t C, int64_t S,
                       int channels_last) {
    if (!x || !y) return BN_ERR_NULL;
    if (N < 0 || C < 0 || S < 0) return BN_ERR_SHAPE;
    if (C > 0 && S > 0 && N > INT64_MAX / C / S) return BN_ERR_SHAPE;
    if (x_len != N * C * S || y_len != N * C * S) return BN_ERR_SIZE;
    if (channels_last != 0 && channels_last != 1) return BN_ERR_LAYOUT;
    return BN_OK;
}

int FN(bn_forward_train_)(const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S,
                          int channels_last, const P *weight, const P *bias, P *running_mean, P *running_var,
                          int64_t c_len, double factor, double eps, double *save_mean, double *save_invstd,
                          int nthreads) {
    int rc = FN(check_x)(x, x_len, y, y_len, N, C, S, channels_last);
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
    double *var = (double *)malloc(sizeof(double) * (size_t)C + sizeof(P) * (size_t)(3 * C) + 1);
    if (!var) return BN_ERR_NULL;
    P *m = (P *)(var + C), *a = m + C, *b = m + 2 * C;
    if (channels_last) {
        /* Statistics need every row before any output: one pass for them, one for y. */
        rc = FN(cl_stats)(x, n, C, save_mean, var, nt);
        if (rc) {
            free(var);
            return rc;
        }
    }
    /* Coefficients of channels [c0, c1) from save_mean/var; running buffers updated. */
#define BNC_COEFFS(c0, c1)                                                                                   \
    for (int64_t c = (c0); c < (c1); ++c) {                                                                  \
        /* torch sums float32 (and 16-bit) data's squared deviations in float: past FLT_MAX the  \
         * variance is +inf (docs/semantics.md, "Where arithmetic runs out") */                            \
        if (sizeof(T) <= 4 && var[c] * (double)n > (double)FLT_MAX) var[c] = INFINITY;                      \
        const double invstd = 1.0 / sqrt(var[c] + eps);                                                     \
        const double w = weight ? (double)weight[c] : 1.0;                                                   \
        save_invstd[c] = invstd;                                                                             \
        m[c] = (P)save_mean[c];                                                                              \
        a[c] = (P)(w * invstd);                                                                              \
        b[c] = bias ? bias[c] : (P)0;                                                                        \
        if (running_mean) {                                                                                  \
            const double unbiased = var[c] * (double)n / (double)(n - 1);                                    \
            running_mean[c] = (P)((1.0 - factor) * (double)running_mean[c] + factor * save_mean[c]);         \
            running_var[c] = (P)((1.0 - factor) * (double)running_var[c] + factor * unbiased);               \
        }                                                                                                    \
    }
    if (channels_last) {
        BNC_COEFFS(0, C)
        FN(cl_affine_map)(x, y, n, C, m, a, b, nt);
        free(var);
        return BN_OK;
    }
    /* NCHW: one pass of work per block of channels, each thread on its own channels: statistics,
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
            BNC_COEFFS(c0, c1)
            FN(block_normalize)(x, y, N, C, S, c0, c1, m, a, b, stream);
        }
        free(acc);
    }
#undef BNC_COEFFS
    free(var);
    return BN_OK;
}

int FN(bn_forward_eval_)(const T *x, int64_t x_len, T *y, int64_t y_len, int64_t N, int64_t C, int64_t S,
                         int channels_last, const P *weight, const P *bias, const P *running_mean,
                         const P *running_var, int64_t c_len, double eps, int nthreads) {
    int rc = FN(check_x)(x, x_len, y, y_len, N, C, S, channels_last);
    if (rc) return rc;
    if (!running_mean || !running_var) return BN_ERR_NULL;
    if (c_len != C) return BN_ERR_SIZE;
    if (!(eps >= 0.0)) return BN_ERR_EPS;
    if (nthreads < 1) return BN_ERR_THREADS;
    P *a = (P *)malloc(sizeof(P) * (size_t)(2 * C + 1));
    if (!a) return BN_ERR_NULL;
    P *b = a + C;
    for (int64_t c = 0; c < C; ++c) {
        const double w = weight ? (double)weight[c] : 1.0;
        a[c] = (P)(w / sqrt((double)running_var[c] + eps));
        b[c] = bias ? bias[c] : (P)0;
    }
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    if (channels_last)
        FN(cl_affine_map)(x, y, N * S, C, running_mean, a, b, nt);
    else
        FN(affine_map)(x, y, N, C, S, running_mean, a, b, nt);
    free(a);
    return BN_OK;
}

int FN(bn_batch_stats_)(const T *x, int64_t x_len, int64_t N, int64_t C, int64_t S, int channels_last,
                        double *mean, double *var, int64_t c_len, int nthreads) {
    int rc = FN(check_x)(x, x_len, x, x_len, N, C, S, channels_last);
    if (rc) return rc;
    if (!mean || !var) return BN_ERR_NULL;
    if (c_len != C) return BN_ERR_SIZE;
    if (nthreads < 1) return BN_ERR_THREADS;
    if (N * S == 0) {
        for (int64_t c = 0; c < C; ++c) mean[c] = var[c] = NAN;
        return BN_OK;
    }
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    return channels_last ? FN(cl_stats)(x, N * S, C, mean, var, nt) : FN(nchw_stats)(x, N, C, S, mean, var, nt);
}

/* Per-channel sum dy and sum dy*(x - center); then dx = dy*k1[c] + x*k2[c] + k3[c]. */
static void FN(sums_dy)(const T *restrict dy, const T *restrict x, int64_t N, int64_t C, int64_t S,
                        const double *restrict center, double *restrict sum_dy, double *restrict sum_dyx, int nt) {
    if (S >= PLANE_MIN) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t c = 0; c < C; ++c) {
            double a1[BNC_ACC] = {0.0}, a2[BNC_ACC] = {0.0};
            const double m = center[c];
            for (int64_t n = 0; n < N; ++n) {
                const T *restrict g = dy + (n * C + c) * S;
                const T *restrict p = x + (n * C + c) * S;
#if defined(BNC_WIDEN)
                P gb[BNC_RUN], pb[BNC_RUN];
                for (int64_t i0 = 0; i0 < S; i0 += BNC_RUN) {
                    const int64_t len = S - i0 < BNC_RUN ? S - i0 : BNC_RUN;
                    BNC_WIDEN(g + i0, gb, len);
                    BNC_WIDEN(p + i0, pb, len);
                    FN(dy_run)(gb, pb, len, m, a1, a2);
                }
#else
                FN(dy_run)(g, p, S, m, a1, a2);
#endif
            }
            const double s1 = FN(acc_total)(a1), s2 = FN(acc_total)(a2);
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
                            s1 += (double)LD(dy[k]);
                            s2 += (double)LD(dy[k]) * ((double)LD(x[k]) - center[c]);
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
                    const double gj = (double)LD(g[j]);
                    a1[j] += gj;
                    a2[j] += gj * ((double)LD(p[j]) - mexp[j]);
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

/* The same sums, channels_last (R rows of C values): per (chunk, tile) partial sums, added in
 * chunk order at the end. Returns BN_ERR_NULL if the partial sums cannot be allocated. */
static int FN(cl_sums)(const T *restrict dy, const T *restrict x, int64_t R, int64_t C, const double *restrict center,
                       double *restrict sum_dy, double *restrict sum_dyx, int nt) {
    if (C == 0) return BN_OK;
    if (R == 0) {
        for (int64_t c = 0; c < C; ++c) sum_dy[c] = sum_dyx[c] = 0.0;
        return BN_OK;
    }
    const bnc_cl_plan pl = bnc_cl_make_plan(R, C);
    double *buf = (double *)malloc(sizeof(double) * (size_t)(2 * pl.K * C));
    if (!buf) return BN_ERR_NULL;
    double *part1 = buf, *part2 = buf + pl.K * C;
    const int64_t units = pl.K * pl.tiles;
    (void)nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t k = u / pl.tiles, t = u % pl.tiles;
            const int64_t r0 = k * pl.CR, r1 = r0 + pl.CR < R ? r0 + pl.CR : R;
            const int64_t c0 = t * pl.W, w = c0 + pl.W < C ? pl.W : C - c0;
            double *restrict s1 = part1 + k * C + c0, *restrict s2 = part2 + k * C + c0;
            const double *restrict mc = center + c0;
            for (int64_t j = 0; j < w; ++j) s1[j] = s2[j] = 0.0;
            for (int64_t r = r0; r < r1; ++r) {
                const T *restrict g = dy + r * C + c0;
                const T *restrict p = x + r * C + c0;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) {
                    const double gj = (double)LD(g[j]);
                    s1[j] += gj;
                    s2[j] += gj * ((double)LD(p[j]) - mc[j]);
                }
            }
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < C; ++c) {
            double a1 = 0.0, a2 = 0.0;
            for (int64_t k = 0; k < pl.K; ++k) {
                a1 += part1[k * C + c];
                a2 += part2[k * C + c];
            }
            sum_dy[c] = a1;
            sum_dyx[c] = a2;
        }
    }
    free(buf);
    return BN_OK;
}

/* dx = dy*k1[c] + (x - m[c])*k2[c] + k3[c] in P; x may be NULL (then dx = dy*k1 + k3). */
static inline void FN(dx_run)(const T *restrict g, const T *restrict p, T *restrict q, int64_t len,
                              P m, P k1, P k2, P k3) {
#if defined(BNC_WIDEN)
    P gb[BNC_RUN], pb[BNC_RUN];
    for (int64_t i0 = 0; i0 < len; i0 += BNC_RUN) {
        const int64_t n = len - i0 < BNC_RUN ? len - i0 : BNC_RUN;
        BNC_WIDEN(g + i0, gb, n);
        if (p) {
            BNC_WIDEN(p + i0, pb, n);
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) gb[i] = gb[i] * k1 + (pb[i] - m) * k2 + k3;
        } else {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) gb[i] = gb[i] * k1 + k3;
        }
        BNC_NARROW(gb, q + i0, n);
    }
#else
    if (p) {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) q[i] = ST(LD(g[i]) * k1 + (LD(p[i]) - m) * k2 + k3);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) q[i] = ST(LD(g[i]) * k1 + k3);
    }
#endif
}

static void FN(dx_map)(const T *restrict dy, const T *restrict x, T *restrict dx, int64_t N, int64_t C, int64_t S,
                       const P *restrict m, const P *restrict k1, const P *restrict k2, const P *restrict k3, int nt) {
    (void)nt;
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
            for (int64_t c = 0; c < C; ++c) q[c] = ST(LD(g[c]) * k1[c] + (LD(p[c]) - m[c]) * k2[c] + k3[c]);
        } else {
            for (int64_t c = 0; c < C; ++c)
                FN(dx_run)(g + c * S, p ? p + c * S : NULL, q + c * S, S, m[c], k1[c], k2[c], k3[c]);
        }
    }
}

/* The same map, channels_last: R rows of C values. */
static void FN(cl_dx_map)(const T *restrict dy, const T *restrict x, T *restrict dx, int64_t R, int64_t C,
                          const P *restrict m, const P *restrict k1, const P *restrict k2, const P *restrict k3, int nt) {
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < R; ++r) {
        const T *restrict g = dy + r * C;
        T *restrict q = dx + r * C;
        if (x) {
            const T *restrict p = x + r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) q[c] = ST(LD(g[c]) * k1[c] + (LD(p[c]) - m[c]) * k2[c] + k3[c]);
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) q[c] = ST(LD(g[c]) * k1[c] + k3[c]);
        }
    }
}

static int FN(check_bwd)(const void *dy, int64_t dy_len, const void *x, const void *dx, int64_t x_len, int64_t N, int64_t C,
                         int64_t S, int channels_last, const void *dweight, const void *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_x)(x, x_len, dx, x_len, N, C, S, channels_last);
    if (rc) return rc;
    if (!dy || !dweight || !dbias) return BN_ERR_NULL;
    if (dy_len != x_len) return BN_ERR_SIZE;
    if (c_len != C) return BN_ERR_SIZE;
    if (nthreads < 1) return BN_ERR_THREADS;
    return BN_OK;
}

int FN(bn_backward_train_)(const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, int64_t S,
                           int channels_last, const P *weight, const double *save_mean, const double *save_invstd,
                           P *dweight, P *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_bwd)(dy, dy_len, x, dx, x_len, N, C, S, channels_last, dweight, dbias, c_len, nthreads);
    if (rc) return rc;
    if (!save_mean || !save_invstd) return BN_ERR_NULL;
    const int64_t n = N * S;
    double *buf = (double *)malloc(sizeof(double) * (size_t)(2 * C) + sizeof(P) * (size_t)(4 * C) + 1);
    if (!buf) return BN_ERR_NULL;
    double *sdy = buf, *sdyx = buf + C;
    P *m = (P *)(buf + 2 * C), *k1 = m + C, *k2 = m + 2 * C, *k3 = m + 3 * C;
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    if (channels_last) {
        rc = FN(cl_sums)(dy, x, n, C, save_mean, sdy, sdyx, nt);
        if (rc) {
            free(buf);
            return rc;
        }
    } else {
        FN(sums_dy)(dy, x, N, C, S, save_mean, sdy, sdyx, nt);
    }
    for (int64_t c = 0; c < C; ++c) {
        const double w = weight ? (double)weight[c] : 1.0, is = save_invstd[c];
        const double sum_dy_xhat = sdyx[c] * is;
        dweight[c] = (P)sum_dy_xhat;
        dbias[c] = (P)sdy[c];
        if (n > 0) { /* dx = w*is*(dy - sum_dy/n - xhat*sum_dy_xhat/n) */
            m[c] = (P)save_mean[c];
            k1[c] = (P)(w * is);
            k2[c] = (P)(-w * is * is * sum_dy_xhat / (double)n);
            k3[c] = (P)(-w * is * sdy[c] / (double)n);
        }
    }
    if (n > 0) {
        if (channels_last)
            FN(cl_dx_map)(dy, x, dx, n, C, m, k1, k2, k3, nt);
        else
            FN(dx_map)(dy, x, dx, N, C, S, m, k1, k2, k3, nt);
    }
    free(buf);
    return BN_OK;
}

int FN(bn_backward_eval_)(const T *dy, int64_t dy_len, const T *x, T *dx, int64_t x_len, int64_t N, int64_t C, int64_t S,
                          int channels_last, const P *weight, const P *running_mean, const P *running_var, double eps,
                          P *dweight, P *dbias, int64_t c_len, int nthreads) {
    int rc = FN(check_bwd)(dy, dy_len, x, dx, x_len, N, C, S, channels_last, dweight, dbias, c_len, nthreads);
    if (rc) return rc;
    if (!running_mean || !running_var) return BN_ERR_NULL;
    if (!(eps >= 0.0)) return BN_ERR_EPS;
    double *buf = (double *)calloc(1, sizeof(double) * (size_t)(3 * C) + sizeof(P) * (size_t)(2 * C) + 1);
    if (!buf) return BN_ERR_NULL;
    double *center = buf, *sdy = buf + C, *sdyx = buf + 2 * C;
    P *k1 = (P *)(buf + 3 * C), *zero = k1 + C;
    const int nt = N * C * S < PARALLEL_MIN ? 1 : nthreads;
    for (int64_t c = 0; c < C; ++c) {
        center[c] = (double)running_mean[c];
        k1[c] = (P)((weight ? (double)weight[c] : 1.0) / sqrt((double)running_var[c] + eps));
        zero[c] = (P)0;
    }
    if (channels_last) {
        rc = FN(cl_sums)(dy, x, N * S, C, center, sdy, sdyx, nt);
        if (rc) {
            free(buf);
            return rc;
        }
    } else {
        FN(sums_dy)(dy, x, N, C, S, center, sdy, sdyx, nt);
    }
    for (int64_t c = 0; c < C; ++c) {
        dweight[c] = (P)(sdyx[c] / sqrt((double)running_var[c] + eps));
        dbias[c] = (P)sdy[c];
    }
    if (channels_last) /* dx = dy * k1 */
        FN(cl_dx_map)(dy, NULL, dx, N * S, C, zero, k1, zero, zero, nt);
    else
        FN(dx_map)(dy, NULL, dx, N, C, S, zero, k1, zero, zero, nt);
    free(buf);
    return BN_OK;
}

#undef BNC_USE_STREAM
#undef BNC_RUN
#undef BNC_ACC
#undef FN
