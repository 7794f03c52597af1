/* cblas_sgemm for MLX's CPU backend that streams each weight once for decode-shaped products.
 *
 * Decoding multiplies 1..8 rows of activations by each weight matrix (x @ W^T, W of N x K): one
 * row per plain step, K + 1 rows per speculative verify pass. OpenBLAS 0.3.21's sgemm packs all
 * of W first for such a product (an extra read and write of every weight), which holds a decode
 * step to ~5 GB/s where gemv streams W once at ~15 GB/s on the same two cores. So, for row-major
 * C = A op(B) with M <= 8 rows of A (not transposed):
 *   - B = W transposed (nn.Linear): W is read once, in panels that stay in L1/L2 while every
 *     row of A is dotted with them, in register tiles of up to 4 rows of A by 4-8 rows of W so
 *     that one load feeds several multiply-adds: a verify pass over 2..5 rows then costs close
 *     to one row, as the memory traffic does (one dot at a time, M rows cost ~M times the
 *     arithmetic of one and the pass turns compute-bound). When W is large its rows are split
 *     with one helper thread, started on the first such product and kept (waking it costs less
 *     than creating a thread per call).
 *     C[m, n] is the same sum in the same order whatever M is and however the rows are split, so
 *     a speculative verify pass (K + 1 rows) gives bit for bit the logits of K + 1 plain decode
 *     steps (1 row) and greedy output cannot drift on a near tie;
 *   - B not transposed (attention's probabilities @ values): rows of B read once for all rows
 *     of A, one multiply-add chain per (m, n) in k order (also independent of M).
 * With beta = 0, C is only written (it may hold garbage, NaN included).
 * Everything else goes to OpenBLAS's sgemm. The loader hands over OpenBLAS's two entry points
 * with cherry_smallm_set while this library is still loaded locally, and only then makes it
 * global, so cblas_sgemm is never reachable with a target missing.
 */
#include <pthread.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
#define MAX_ROWS 8
#define THREAD_MIN_WEIGHTS (1L << 20)

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);

static sgemm_fn real_sgemm;
static sgemv_fn real_sgemv;
static long small_calls, gemm_calls; /* updated atomically: MLX may call from several threads */

void cherry_smallm_set(void *gemm, void *gemv) {
    real_sgemm = (sgemm_fn)gemm;
    real_sgemv = (sgemv_fn)gemv;
}

/* How many products took each path (for tests and benchmarks). */
void cherry_smallm_counts(long *small, long *gemm) {
    *small = __atomic_load_n(&small_calls, __ATOMIC_RELAXED);
    *gemm = __atomic_load_n(&gemm_calls, __ATOMIC_RELAXED);
}

typedef struct {
    int M, K, lda, ldb, ldc, n0, n1;
    float alpha, beta;
    const float *A, *B;
    float *C;
} job_t;

/* The dot-product recipe, the same for every (m, n) whatever M, N or the blocking: lane i of one
 * 8-wide accumulator sums w[k] x[k] for k = 8t + i in increasing t (fused multiply-add where the
 * compiler contracts, as it does everywhere alike), the 8 lanes are added in a fixed tree, then
 * the K % 8 tail in order. Blocking only chooses how many such independent sums run side by side:
 * one weight vector load feeds MM rows of A, one x vector load feeds NB rows of W, and MM * NB
 * accumulators hide the multiply-add latency (one dot alone would wait on it every 8 floats). */
typedef float vf __attribute__((vector_size(32)));
#define VL 8
/* Hardware prefetchers lag once a panel takes several multiply-adds per weight: ask for the
 * weights PF_ROWS rows ahead (16-32 rows tested: M = 2..5 then cost about what 1 row does). */
#define PF_ROWS 32
#define PF_LOCALITY 1
#ifdef __AVX512VL__ /* 32 vector registers: 5 x 3 accumulators fit */
#define NB5 3
#else
#define NB5 2
#endif

static inline vf loadv(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v); /* unaligned load */
    return v;
}

static inline float finish(vf s, const float *w, const float *x, int k0, int K) {
    float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    float t = 0.0f;
    for (int k = k0; k < K; k++) t += w[k] * x[k];
    return r + t;
}

/* alpha acc + beta c with one rounding order wherever it is inlined (an explicit fma: left to
 * contraction, the compiler may fuse either product, differently in a vectorised loop). */
static inline void put(float *c, float acc, float alpha, float beta) {
    float r = alpha * acc;
    *c = beta == 0.0f ? r : __builtin_fmaf(beta, *c, r);
}

static inline void store(const job_t *j, int m, int n, float acc) {
    put(j->C + (long)m * j->ldc + n, acc, j->alpha, j->beta);
}

/* C[m0..m0+MM, n0..n0+NB] with MM, NB compile-time constants (the loops unroll; the accumulators
 * stay in registers). */
static inline __attribute__((always_inline)) void tile(const job_t *j, int m0, int n0, int MM,
                                                       int NB, long pf) {
    const int K = j->K, K8 = K - K % VL;
    const float *x[5], *w[8];
    vf acc[5][8];
    for (int a = 0; a < MM; a++) x[a] = j->A + (long)(m0 + a) * j->lda;
    for (int b = 0; b < NB; b++) w[b] = j->B + (long)(n0 + b) * j->ldb;
    for (int a = 0; a < MM; a++)
        for (int b = 0; b < NB; b++) acc[a][b] = (vf){0};
    for (int k = 0; k < K8; k += VL) {
        vf wv[8];
        if (pf && (k & 15) == 0) /* the same place PF_ROWS rows on: one prefetch per line */
            for (int b = 0; b < NB; b++) __builtin_prefetch(w[b] + k + pf, 0, PF_LOCALITY);
        for (int b = 0; b < NB; b++) wv[b] = loadv(w[b] + k);
        for (int a = 0; a < MM; a++) {
            vf xv = loadv(x[a] + k);
            for (int b = 0; b < NB; b++) acc[a][b] += wv[b] * xv;
        }
    }
    for (int a = 0; a < MM; a++)
        for (int b = 0; b < NB; b++) store(j, m0 + a, n0 + b, finish(acc[a][b], w[b], x[a], K8, K));
}

/* Rows m0..m0+MM of C over columns n0..n1, NB weight rows at a time, the rest one by one. */
#define SWEEP(MM, NB)                                                                              \
    static void sweep_##MM(const job_t *j, int m0, int n0, int n1, long pf) {                      \
        int n = n0;                                                                                \
        for (; n + NB <= n1; n += NB) tile(j, m0, n, MM, NB, pf);                                  \
        for (; n < n1; n++) tile(j, m0, n, MM, 1, pf);                                             \
    }
SWEEP(1, 8)
SWEEP(2, 4)
SWEEP(3, 4)
SWEEP(4, 4)
SWEEP(5, NB5)

/* Columns are walked in panels of PANEL weight rows: each panel comes from memory once and is
 * reused from L1/L2 by every group of rows of A (one group up to 5 rows, two for 6..8), so W is
 * streamed once for all M. */
#define PANEL 16

/* 0: the untiled path, as before tiles (for benchmarks and CHERRY_MLX_SMALL_GEMM=untiled): one
 * dot at a time for B = W^T (same results), OpenBLAS gemv per row for B as stored. */
static int tiled = 1;

void cherry_smallm_tiled(int on) { __atomic_store_n(&tiled, on, __ATOMIC_RELAXED); }

static void rows_dot(const job_t *j) {
    if (!__atomic_load_n(&tiled, __ATOMIC_RELAXED)) {
        for (int n = j->n0; n < j->n1; n++)
            for (int m = 0; m < j->M; m++) tile(j, m, n, 1, 1, 0);
        return;
    }
    int groups = j->M <= 5 ? 1 : 2;
    for (int n = j->n0; n < j->n1; n += PANEL) {
        int n1 = n + PANEL < j->n1 ? n + PANEL : j->n1;
        long pf = n1 + PF_ROWS <= j->n1 ? (long)PF_ROWS * j->ldb : 0; /* stay inside W */
        for (int g = 0, m = 0; g < groups; g++, pf = 0) { /* the first group prefetches */
            int mm = (j->M - m) / (groups - g); /* 6 = 3 + 3, 7 = 3 + 4, 8 = 4 + 4 */
            switch (mm) {
            case 1: sweep_1(j, m, n, n1, pf); break;
            case 2: sweep_2(j, m, n, n1, pf); break;
            case 3: sweep_3(j, m, n, n1, pf); break;
            case 4: sweep_4(j, m, n, n1, pf); break;
            default: sweep_5(j, m, n, n1, pf); break;
            }
            m += mm;
        }
    }
}

/* B as stored (K x N): C[m, n] = sum over k ascending of A[m, k] B[k, n], one multiply-add
 * chain per (m, n) (a lane of a vector or a scalar: the same operations), so again independent
 * of M. Rows of B are read once for all rows of A; each A[m, k] is broadcast across lanes. This
 * is attention's probabilities @ values (N = head dim), called once per head: OpenBLAS's gemv
 * per row cost more in call overhead (and threads) than the product itself. */
static inline __attribute__((always_inline)) void tile_nn(int MM, int NV, int K, const float *A,
                                                          int lda, const float *B, int ldb,
                                                          float *acc_out, int n) {
    vf acc[5][4];
    for (int a = 0; a < MM; a++)
        for (int v = 0; v < NV; v++) acc[a][v] = (vf){0};
    for (int k = 0; k < K; k++) {
        const float *b = B + (long)k * ldb + n;
        vf bv[4];
        for (int v = 0; v < NV; v++) bv[v] = loadv(b + v * VL);
        for (int a = 0; a < MM; a++) {
            vf av = (vf){0} + A[(long)a * lda + k]; /* broadcast */
            for (int v = 0; v < NV; v++) acc[a][v] += av * bv[v];
        }
    }
    for (int a = 0; a < MM; a++)
        for (int v = 0; v < NV; v++) memcpy(acc_out + (a * 4 + v) * VL, &acc[a][v], sizeof(vf));
}

#define NN_SWEEP(MM, NV)                                                                           \
    static void nn_##MM(int K, int N, const float *A, int lda, const float *B, int ldb,            \
                        float alpha, float beta, float *C, int ldc) {                              \
        float out[5 * 4 * VL];                                                                     \
        int n = 0;                                                                                 \
        for (; n + NV * VL <= N; n += NV * VL) {                                                   \
            tile_nn(MM, NV, K, A, lda, B, ldb, out, n);                                            \
            for (int a = 0; a < MM; a++)                                                           \
                for (int i = 0; i < NV * VL; i++)                                                  \
                    put(C + (long)a * ldc + n + i, out[a * 4 * VL + i], alpha, beta);         \
        }                                                                                          \
        for (; n + VL <= N; n += VL) {                                                             \
            tile_nn(MM, 1, K, A, lda, B, ldb, out, n);                                             \
            for (int a = 0; a < MM; a++)                                                           \
                for (int i = 0; i < VL; i++)                                                       \
                    put(C + (long)a * ldc + n + i, out[a * 4 * VL + i], alpha, beta);         \
        }                                                                                          \
        for (; n < N; n++) /* the last N % 8 columns: the same chain in scalars */                 \
            for (int a = 0; a < MM; a++) {                                                         \
                float t = 0.0f;                                                                    \
                for (int k = 0; k < K; k++) t += A[(long)a * lda + k] * B[(long)k * ldb + n];      \
                put(C + (long)a * ldc + n, t, alpha, beta);                                   \
            }                                                                                      \
    }

NN_SWEEP(1, 4)
NN_SWEEP(2, 4)
NN_SWEEP(3, 2)
NN_SWEEP(4, 2)

static void small_gemm_nn(int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    for (int m = 0; m < M;) {
        int mm = M - m >= 4 ? 4 : M - m;
        const float *a = A + (long)m * lda;
        float *c = C + (long)m * ldc;
        switch (mm) {
        case 1: nn_1(K, N, a, lda, B, ldb, alpha, beta, c, ldc); break;
        case 2: nn_2(K, N, a, lda, B, ldb, alpha, beta, c, ldc); break;
        case 3: nn_3(K, N, a, lda, B, ldb, alpha, beta, c, ldc); break;
        default: nn_4(K, N, a, lda, B, ldb, alpha, beta, c, ldc); break;
        }
        m += mm;
    }
}

/* The helper thread. `owner` is held by the one caller using it (a second concurrent caller
 * does its product alone); `mu` guards the hand-over of `job` and `done`. */
static pthread_mutex_t owner = PTHREAD_MUTEX_INITIALIZER, mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
static const job_t *job;
static int done, helper_state; /* 0: not started, 1: running, -1: could not start */

static void *helper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (job == 0) pthread_cond_wait(&go, &mu);
        const job_t *j = job;
        pthread_mutex_unlock(&mu);
        rows_dot(j);
        pthread_mutex_lock(&mu);
        job = 0;
        done = 1;
        pthread_cond_signal(&finished);
    }
    return 0;
}

/* A forked child has no helper thread and may hold copies of locked mutexes: start afresh. */
static void reset_in_child(void) {
    pthread_mutex_init(&owner, 0);
    pthread_mutex_init(&mu, 0);
    pthread_cond_init(&go, 0);
    pthread_cond_init(&finished, 0);
    job = 0;
    helper_state = 0;
}

__attribute__((constructor)) static void init(void) { pthread_atfork(0, 0, reset_in_child); }

static int helper_ready(void) { /* with `owner` held */
    if (helper_state == 0) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        helper_state = pthread_create(&t, &attr, helper, 0) == 0 ? 1 : -1;
        pthread_attr_destroy(&attr);
    }
    return helper_state == 1;
}

static void small_gemm_nt(int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    job_t a = {M, K, lda, ldb, ldc, 0, N, alpha, beta, A, B, C};
    if ((long)N * K >= THREAD_MIN_WEIGHTS && N >= 2 && pthread_mutex_trylock(&owner) == 0) {
        if (helper_ready()) {
            job_t b = a;
            a.n1 = b.n0 = N / 2;
            pthread_mutex_lock(&mu);
            done = 0;
            job = &b;
            pthread_cond_signal(&go);
            pthread_mutex_unlock(&mu);
            rows_dot(&a);
            pthread_mutex_lock(&mu);
            while (!done) pthread_cond_wait(&finished, &mu);
            pthread_mutex_unlock(&mu);
            pthread_mutex_unlock(&owner);
            return;
        }
        pthread_mutex_unlock(&owner);
    }
    rows_dot(&a);
}

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (order != ROW_MAJOR || ta != NO_TRANS || (tb != NO_TRANS && tb != TRANS) || M < 1 ||
        M > MAX_ROWS || N < 1 || K < 1 || real_sgemv == 0) {
        __atomic_fetch_add(&gemm_calls, 1, __ATOMIC_RELAXED);
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    __atomic_fetch_add(&small_calls, 1, __ATOMIC_RELAXED);
    if (tb == TRANS) { /* B is W (N x K): C[m, n] = alpha W[n] . A[m] + beta C */
        small_gemm_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else if (__atomic_load_n(&tiled, __ATOMIC_RELAXED)) { /* B is K x N */
        small_gemm_nn(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else { /* untiled (benchmarks): OpenBLAS gemv per row of A, C[m] = alpha B^T A[m] + beta C */
        if (beta == 0.0f) /* C may hold garbage (NaN): gemv would scale it, so clear it */
            for (int m = 0; m < M; m++) memset(C + (long)m * ldc, 0, sizeof(float) * N);
        for (int m = 0; m < M; m++)
            real_sgemv(ROW_MAJOR, TRANS, K, N, alpha, B, ldb, A + (long)m * lda, 1, beta,
                       C + (long)m * ldc, 1);
    }
}
