/* cblas_sgemm for MLX's CPU backend that streams each weight once for decode-shaped products.
 *
 * Decoding multiplies 1..8 rows of activations by each weight matrix (x @ W^T, W of N x K): one
 * row per plain step, K + 1 rows per speculative verify pass. OpenBLAS 0.3.21's sgemm packs all
 * of W first for such a product (an extra read and write of every weight), which holds a decode
 * step to ~5 GB/s where gemv streams W once at ~15 GB/s on the same two cores. So, for row-major
 * C = A op(B) with M <= 8 rows of A (not transposed):
 *   - B = W transposed (nn.Linear): each row of W is read once and dotted with the M rows of A
 *     while it sits in L1, the rows of W split between two threads when W is large (a thread per
 *     call costs ~30 us: worth it from ~1M weights). C[m, n] is the same sum in the same order
 *     whatever M is, so a speculative verify pass (K + 1 rows) gives bit for bit the logits of
 *     K + 1 plain decode steps (1 row) and greedy output cannot drift on a near tie;
 *   - B not transposed: OpenBLAS gemv per row of A (also independent of M).
 * Everything else goes to OpenBLAS's sgemm. The two OpenBLAS entry points are handed over by
 * cherry_smallm_set before mlx is loaded.
 */
#include <pthread.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
#define MAX_ROWS 8

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);

static sgemm_fn real_sgemm;
static sgemv_fn real_sgemv;
static long small_calls, gemm_calls;

void cherry_smallm_set(void *gemm, void *gemv) {
    real_sgemm = (sgemm_fn)gemm;
    real_sgemv = (sgemv_fn)gemv;
}

/* How many products took each path (for tests and `cherry-mlx info`). */
void cherry_smallm_counts(long *small, long *gemm) {
    *small = small_calls;
    *gemm = gemm_calls;
}

typedef struct {
    int M, K, lda, ldb, ldc, n0, n1;
    float alpha, beta;
    const float *A, *B;
    float *C;
} job_t;

static void rows_dot(const job_t *j) {
    for (int n = j->n0; n < j->n1; n++) {
        const float *w = j->B + (long)n * j->ldb;
        for (int m = 0; m < j->M; m++) {
            const float *x = j->A + (long)m * j->lda;
            float acc = 0.0f;
            for (int k = 0; k < j->K; k++) acc += w[k] * x[k];
            float *c = j->C + (long)m * j->ldc + n;
            *c = j->alpha * acc + (j->beta == 0.0f ? 0.0f : j->beta * *c);
        }
    }
}

static void *rows_dot_thread(void *arg) {
    rows_dot((const job_t *)arg);
    return 0;
}

#define THREAD_MIN_WEIGHTS (1L << 20)

static void small_gemm_nt(int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    job_t a = {M, K, lda, ldb, ldc, 0, N, alpha, beta, A, B, C};
    pthread_t t;
    if ((long)N * K >= THREAD_MIN_WEIGHTS && N >= 2) {
        job_t b = a;
        a.n1 = b.n0 = N / 2;
        if (pthread_create(&t, 0, rows_dot_thread, &b) == 0) {
            rows_dot(&a);
            pthread_join(t, 0);
            return;
        }
        a.n1 = N; /* no thread: do it all here */
    }
    rows_dot(&a);
}

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (order != ROW_MAJOR || ta != NO_TRANS || (tb != NO_TRANS && tb != TRANS) || M < 1 ||
        M > MAX_ROWS || N < 1 || K < 1 || real_sgemv == 0) {
        gemm_calls++;
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    small_calls++;
    if (beta == 0.0f) /* C may hold garbage (NaN): gemv would scale it, so clear it */
        for (int m = 0; m < M; m++) memset(C + (long)m * ldc, 0, sizeof(float) * N);
    if (tb == TRANS) { /* B is W (N x K): C[m, n] = alpha W[n] . A[m] + beta C */
        small_gemm_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else { /* B is K x N: C[m] = alpha B^T A[m] + beta C */
        for (int m = 0; m < M; m++)
            real_sgemv(ROW_MAJOR, TRANS, K, N, alpha, B, ldb, A + (long)m * lda, 1, beta,
                       C + (long)m * ldc, 1);
    }
}
