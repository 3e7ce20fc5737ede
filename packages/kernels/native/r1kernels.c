/*
 * r1kernels: CPU kernels for the tfjs wasm backend, run natively on the wasm heap (no copies).
 *
 * The JavaScript side passes a typed-array view of the wasm memory (ArrayBuffer or SharedArrayBuffer) and
 * byte offsets of the tensors in it; every function here reads and writes that memory in place.
 *
 * GEMM: C = op(A) · op(B), row-major, over a batch with per-operand batch strides (stride 0 broadcasts).
 * It runs on OpenBLAS's `cblas_sgemm` when `libopenblas.so.0` can be dlopen'ed (nothing is linked at build
 * time, so the addon builds without BLAS headers), else on the blocked SIMD GEMM below. Either way BLAS
 * runs single-threaded and this file splits work over its own threads: over the batch when there are
 * several products (one BLAS thread per product beats two on small ones), over rows or columns of C otherwise.
 */
#include "common.h"

/* ------------------------------------------------------------------------------------------------ */
/* BLAS, found at run time. */

enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char* (*get_config_fn)(void);

static sgemm_fn blas_sgemm = NULL;
static sgemm_fn blas_loaded = NULL; /* kept while `useBlas(false)` switches BLAS off */
static char blas_name[256] = "";
static char blas_error[512] = "";

static void blas_load(void) {
  if (getenv("R1FLOW_NO_BLAS") != NULL && strcmp(getenv("R1FLOW_NO_BLAS"), "0") != 0) {
    snprintf(blas_error, sizeof blas_error, "R1FLOW_NO_BLAS is set");
    return;
  }
#ifdef __APPLE__
  const char* names[] = {"libopenblas.0.dylib", "libopenblas.dylib"};
#else
  const char* names[] = {"libopenblas.so.0", "libopenblas.so"};
#endif
  void* h = NULL;
  size_t used = 0;
  /* Every name tried and why it failed, so the backend line tells a user what to install. */
  used += (size_t)snprintf(blas_error, sizeof blas_error, "tried");
  for (size_t i = 0; i < sizeof names / sizeof *names && h == NULL; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL && used < sizeof blas_error) {
      const char* e = dlerror();
      used += (size_t)snprintf(blas_error + used, sizeof blas_error - used, "%s %s (%s)", i ? ";" : "", names[i], e != NULL ? e : "not found");
    }
  }
  if (h == NULL) return;
  blas_error[0] = 0;
  sgemm_fn f = (sgemm_fn)dlsym(h, "cblas_sgemm");
  if (f == NULL) {
    snprintf(blas_error, sizeof blas_error, "libopenblas has no cblas_sgemm");
    return;
  }
  /* Our threads split the work; BLAS must not spawn its own on top (2 cores). */
  set_threads_fn st = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
  if (st != NULL) st(1);
  get_config_fn gc = (get_config_fn)dlsym(h, "openblas_get_config");
  snprintf(blas_name, sizeof blas_name, "%s", gc != NULL ? gc() : "OpenBLAS");
  blas_sgemm = blas_loaded = f;
}

/* ------------------------------------------------------------------------------------------------ */
/* The addon's own GEMM: B packed into 16-wide column panels, A into 6-row panels, 6×16 micro-kernel on
 * GCC vector types (one AVX-512 register or two AVX2 ones per row), built for several ISAs. */

#define MR 6
#define NR 16
#define KC 256
#define NC 1024


/* A element (i, p) of op(A): stride rs along rows, cs along k. */
static void pack_a(const float* a, long rs, long cs, int mc, int kc, float* dst) {
  for (int i0 = 0; i0 < mc; i0 += MR) {
    int mr = mc - i0 < MR ? mc - i0 : MR;
    for (int p = 0; p < kc; p++) {
      for (int i = 0; i < mr; i++) dst[p * MR + i] = a[(i0 + i) * rs + p * cs];
      for (int i = mr; i < MR; i++) dst[p * MR + i] = 0;
    }
    dst += (long)MR * kc;
  }
}

static void pack_b(const float* b, long rs, long cs, int kc, int nc, float* dst) {
  for (int j0 = 0; j0 < nc; j0 += NR) {
    int nr = nc - j0 < NR ? nc - j0 : NR;
    for (int p = 0; p < kc; p++) {
      for (int j = 0; j < nr; j++) dst[p * NR + j] = b[p * rs + (j0 + j) * cs];
      for (int j = nr; j < NR; j++) dst[p * NR + j] = 0;
    }
    dst += (long)NR * kc;
  }
}

MULTI static void micro(int kc, const float* restrict ap, const float* restrict bp, float* c, long ldc, int mr, int nr, int accumulate) {
  v16 acc[MR];
  for (int i = 0; i < MR; i++) acc[i] = (v16){0};
  for (int p = 0; p < kc; p++) {
    v16 bv;
    memcpy(&bv, bp + p * NR, sizeof bv);
    const float* a = ap + p * MR;
    for (int i = 0; i < MR; i++) acc[i] += a[i] * bv;
  }
  for (int i = 0; i < mr; i++) {
    float* row = c + i * ldc;
    float tmp[NR];
    memcpy(tmp, &acc[i], sizeof tmp);
    if (accumulate) for (int j = 0; j < nr; j++) row[j] += tmp[j];
    else for (int j = 0; j < nr; j++) row[j] = tmp[j];
  }
}

static _Thread_local float* pack_buf = NULL;

/* C[m, n] (ldc) = op(A)[m, k] · op(B)[k, n], A / B given by element strides. */
static void own_gemm(int m, int n, int k, const float* a, long ars, long acs, const float* b, long brs, long bcs, float* c, long ldc) {
  if (pack_buf == NULL) pack_buf = aligned_alloc(64, sizeof(float) * ((size_t)KC * NC + (size_t)KC * 256 + 64));
  float* bpk = pack_buf;
  float* apk = pack_buf + (size_t)KC * NC;
  if (k == 0) {
    for (int i = 0; i < m; i++) memset(c + i * ldc, 0, sizeof(float) * n);
    return;
  }
  for (int jc = 0; jc < n; jc += NC) {
    int nc = n - jc < NC ? n - jc : NC;
    for (int pc = 0; pc < k; pc += KC) {
      int kc = k - pc < KC ? k - pc : KC;
      pack_b(b + pc * brs + jc * bcs, brs, bcs, kc, nc, bpk);
      for (int ic = 0; ic < m; ic += 252) {
        int mc = m - ic < 252 ? m - ic : 252;
        pack_a(a + ic * ars + pc * acs, ars, acs, mc, kc, apk);
        for (int jr = 0; jr < nc; jr += NR) {
          for (int ir = 0; ir < mc; ir += MR) {
            micro(kc, apk + (long)ir * kc, bpk + (long)jr * kc, c + (long)(ic + ir) * ldc + jc + jr, ldc,
                  mc - ir < MR ? mc - ir : MR, nc - jr < NR ? nc - jr : NR, pc > 0);
          }
        }
      }
    }
  }
}

/* R rows × Q·16 columns of C = A · B with the accumulators in registers (R ≤ 4, Q ≤ 4 are constants once inlined). */
static inline __attribute__((always_inline)) void few_rows_tile(const int R, const int Q, int k, const float* restrict a, int lda,
                                                                const float* restrict b, int ldb, float* restrict c, int ldc) {
  v16 acc[4][4];
  for (int i = 0; i < R; i++) for (int q = 0; q < Q; q++) acc[i][q] = (v16){0};
  for (int p = 0; p < k; p++) {
    const float* brow = b + (long)p * ldb;
    v16 bv[4];
    for (int q = 0; q < Q; q++) memcpy(&bv[q], brow + 16 * q, sizeof(v16));
    for (int i = 0; i < R; i++) {
      v16 av = (v16){0} + a[(long)i * lda + p];
      for (int q = 0; q < Q; q++) acc[i][q] += av * bv[q];
    }
  }
  for (int i = 0; i < R; i++) for (int q = 0; q < Q; q++) memcpy(c + (long)i * ldc + 16 * q, &acc[i][q], sizeof(v16));
}

/* All rows of a column strip of Q·16 columns, four rows at a time. */
static inline __attribute__((always_inline)) void few_rows_strip(const int Q, int m, int k, const float* restrict a, int lda,
                                                                 const float* restrict b, int ldb, float* restrict c, int ldc) {
  int i = 0;
  for (; i + 4 <= m; i += 4) few_rows_tile(4, Q, k, a + (long)i * lda, lda, b, ldb, c + (long)i * ldc, ldc);
  switch (m - i) {
    case 3: few_rows_tile(3, Q, k, a + (long)i * lda, lda, b, ldb, c + (long)i * ldc, ldc); break;
    case 2: few_rows_tile(2, Q, k, a + (long)i * lda, lda, b, ldb, c + (long)i * ldc, ldc); break;
    case 1: few_rows_tile(1, Q, k, a + (long)i * lda, lda, b, ldb, c + (long)i * ldc, ldc); break;
    default: break;
  }
}

/* C[m, n] = A[m, k] · B[k, n] for a few rows (decoding: one token per sequence), without packing. Packing B
 * writes and rereads a copy of it, which for a few rows costs more than the product: B streams from memory
 * once (it does not stay in cache between the layers' products), so one pass over it is the floor. Each
 * 64-column strip of B (k × 64) stays in L2 while the row blocks reuse it. Measured at [16, 256] × [256, 640]:
 * 45 µs against 71 µs packed with B in cache, 68–90 µs against 124 µs with B cold. The last n % 16 columns go
 * through a zero-padded copy of that strip. Up to FEW_ROWS rows it also beats the packed GEMM with its 6 × 16
 * register tile ([128, 128] × [128, 384]: 110 µs against 132). */
#define FEW_ROWS 128
MULTI static void few_rows_gemm(int m, int n, int k, const float* restrict a, int lda, const float* restrict b, int ldb, float* restrict c, int ldc) {
  int j = 0;
  for (; j + 64 <= n; j += 64) few_rows_strip(4, m, k, a, lda, b + j, ldb, c + j, ldc);
  for (; j + 16 <= n; j += 16) few_rows_strip(1, m, k, a, lda, b + j, ldb, c + j, ldc);
  if (j < n) {
    int w = n - j;
    float* bt = malloc(sizeof(float) * 16 * ((size_t)k + 1) + sizeof(float) * 16 * (size_t)m);
    if (bt == NULL) {
      own_gemm(m, w, k, a, lda, 1, b + j, ldb, 1, c + j, ldc);
      return;
    }
    float* ct = bt + 16 * ((size_t)k + 1);
    for (int p = 0; p < k; p++) {
      memset(bt + 16 * p, 0, sizeof(float) * 16);
      memcpy(bt + 16 * p, b + (long)p * ldb + j, sizeof(float) * w);
    }
    few_rows_strip(1, m, k, a, lda, bt, 16, ct, 16);
    for (int i = 0; i < m; i++) memcpy(c + (long)i * ldc + j, ct + 16 * i, sizeof(float) * w);
    free(bt);
  }
}

/* One product of the row-major matrices: op(A) is [m, k], op(B) is [k, n]; C is [m, n] with ldc. */
void gemm1(int ta, int tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc, int own) {
  if (m == 0 || n == 0) return;
  if (!ta && !tb && m <= FEW_ROWS && k > 0) {
    few_rows_gemm(m, n, k, a, lda, b, ldb, c, ldc);
  } else if (blas_sgemm != NULL && !own) {
    blas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  } else {
    own_gemm(m, n, k, a, ta ? 1 : lda, ta ? lda : 1, b, tb ? 1 : ldb, tb ? ldb : 1, c, ldc);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* A fixed pool: the calling thread plus nthreads−1 workers. A job is `count` chunks, task(ctx, chunk, count);
 * every thread claims chunks from a shared counter until none is left, so when a worker is slow to wake (a
 * loaded machine) the calling thread simply does more of them, and never waits on a chunk nobody started.
 *
 * `work` packs (generation << 32 | next chunk); a claim is a compare-and-swap of it, so a claim made on a
 * stale view of `work` fails. A new job is published in three steps: `work` becomes (gen | CLOSED), then the
 * job's task, context and count are written, then `work` becomes (gen | 0). The CLOSED step is what makes a
 * late worker safe: one still looping on the previous job may read the NEW count (and pass `next < count`
 * with the old generation's counter), but every store here is sequentially consistent, so a worker that saw
 * any new field also sees `work` already moved past the value it expects, and its claim fails. Without that
 * step (as before) such a worker claimed chunk `c_old` of the new job before it was published: that chunk ran
 * twice, `done` reached `count` while a chunk was still running, and parallel() returned with a worker
 * inside a finished kernel, reading its dead stack frame and writing tensors already handed back to tfjs.
 * That was the demo's segfault (found with `poolCheck` below, ~1 violation per 25,000 jobs on 2 cores). */

#define CLOSED 0xFFFFFFFFu

int nthreads = 1;
static pthread_t workers[MAX_THREADS];
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static _Atomic uint64_t work = CLOSED;
static atomic_int done = 0;
static _Atomic(task_fn) cur_task;
static _Atomic(void*) cur_ctx;
static atomic_int cur_count;

/* Claims and runs chunks of the current job until none is left. */
static void run_chunks(void) {
  for (;;) {
    uint64_t w = atomic_load(&work);
    uint32_t next = (uint32_t)w;
    if (next == CLOSED) return;
    int count = atomic_load(&cur_count);
    if ((int)next >= count) return;
    task_fn task = atomic_load(&cur_task);
    void* ctx = atomic_load(&cur_ctx);
    if (!atomic_compare_exchange_weak(&work, &w, w + 1)) continue;
    /* The claim succeeded on the job's own generation, so task, ctx and count are that job's, and the job
     * cannot finish (nor its context go away) before this chunk is counted done. */
    task(ctx, (int)next, count);
    atomic_fetch_add(&done, 1);
  }
}

/* Whether `w` holds a published job this worker has not joined yet. */
static inline int fresh(uint64_t w, uint32_t seen) { return (uint32_t)(w >> 32) != seen && (uint32_t)w != CLOSED; }

static void* worker_main(void* arg) {
  (void)arg;
  uint32_t seen = 0;
  for (;;) {
    /* Spin a little before sleeping: kernels come back to back during a training step. */
    uint64_t w = atomic_load(&work);
    for (int spins = 0; !fresh(w, seen) && spins < 4000; spins++) {
      __builtin_ia32_pause();
      w = atomic_load(&work);
    }
    if (!fresh(w, seen)) {
      pthread_mutex_lock(&pool_mu);
      while (!fresh(w = atomic_load(&work), seen)) pthread_cond_wait(&pool_cv, &pool_mu);
      pthread_mutex_unlock(&pool_mu);
    }
    seen = (uint32_t)(w >> 32);
    run_chunks();
  }
  return NULL;
}

static void pool_start(int n) {
  if (n > MAX_THREADS) n = MAX_THREADS;
  for (int i = 1; i < n; i++) {
    if (pthread_create(&workers[i], NULL, worker_main, NULL) != 0) break;
    pthread_detach(workers[i]);
    nthreads = i + 1;
  }
}

static atomic_flag pool_busy = ATOMIC_FLAG_INIT;

/* Runs task over `count` chunks with the pool (count 1, or the pool busy: on the calling thread only). */
void parallel(task_fn task, void* ctx, int count) {
  /* A second JavaScript thread (a worker) calling in while the pool works runs on its own thread only. */
  if (count <= 1 || nthreads <= 1 || atomic_flag_test_and_set(&pool_busy)) {
    for (int i = 0; i < (count < 1 ? 1 : count); i++) task(ctx, i, count < 1 ? 1 : count);
    return;
  }
  uint64_t gen = (atomic_load(&work) >> 32) + 1;
  atomic_store(&work, gen << 32 | CLOSED);
  atomic_store(&cur_task, task);
  atomic_store(&cur_ctx, ctx);
  atomic_store(&cur_count, count);
  atomic_store(&done, 0);
  pthread_mutex_lock(&pool_mu);
  atomic_store(&work, gen << 32);
  pthread_cond_broadcast(&pool_cv);
  pthread_mutex_unlock(&pool_mu);
  run_chunks();
  /* Chunks a worker claimed are in progress: spin briefly, then yield (on a loaded machine spinning would keep
   * the worker off the core it needs). */
  for (int spins = 0; atomic_load(&done) < count; spins++) {
    if (spins < 2000) __builtin_ia32_pause();
    else sched_yield();
  }
  atomic_flag_clear(&pool_busy);
}

/* ------------------------------------------------------------------------------------------------ */
/* Batched GEMM task. */

typedef struct {
  char* heap;
  int batch, m, n, k, ta, tb;
  long a_off, a_stride, b_off, b_stride, c_off, c_stride; /* bytes */
  int split; /* 0: over the batch, 1: rows of one product, 2: columns of one product */
  int own; /* the addon's GEMM even when BLAS is loaded: OpenBLAS called from two threads at once serialises */
} gemm_job;

static void gemm_task(void* ctx, int index, int count) {
  gemm_job* j = ctx;
  int lda = j->ta ? j->m : j->k, ldb = j->tb ? j->k : j->n;
  if (j->split == 2) {
    /* One product, columns of C split (in multiples of 16): each part packs only its share of B. */
    int per = ((j->n + count - 1) / count + 15) / 16 * 16;
    int c0 = index * per, c1 = c0 + per < j->n ? c0 + per : j->n;
    if (c0 >= c1) return;
    const float* b = (const float*)(j->heap + j->b_off) + (j->tb ? (long)c0 * ldb : c0);
    gemm1(j->ta, j->tb, j->m, c1 - c0, j->k, (const float*)(j->heap + j->a_off), lda, b, ldb,
          (float*)(j->heap + j->c_off) + c0, j->n, j->own);
    return;
  }
  if (j->split == 1) {
    /* One product, rows of C split between the threads (in multiples of 16). */
    int per = ((j->m + count - 1) / count + 15) / 16 * 16;
    int r0 = index * per, r1 = r0 + per < j->m ? r0 + per : j->m;
    if (r0 >= r1) return;
    const float* a = (const float*)(j->heap + j->a_off) + (j->ta ? r0 : (long)r0 * lda);
    gemm1(j->ta, j->tb, r1 - r0, j->n, j->k, a, lda, (const float*)(j->heap + j->b_off), ldb,
          (float*)(j->heap + j->c_off) + (long)r0 * j->n, j->n, j->own);
    return;
  }
  int per = (j->batch + count - 1) / count;
  int b0 = index * per, b1 = b0 + per < j->batch ? b0 + per : j->batch;
  for (int i = b0; i < b1; i++) {
    gemm1(j->ta, j->tb, j->m, j->n, j->k, (const float*)(j->heap + j->a_off + i * j->a_stride), lda,
          (const float*)(j->heap + j->b_off + i * j->b_stride), ldb, (float*)(j->heap + j->c_off + i * j->c_stride), j->n, j->own);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Elementwise kernels: exp, broadcasting binary ops, gather. Large ones are split over the threads. */


MULTI float dot16(const float* a, const float* b, int n) {
  v16 acc = (v16){0};
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    acc += load16(a + j, l) * load16(b + j, l);
  }
  float s = 0;
  for (int i = 0; i < 16; i++) s += acc[i];
  return s;
}

static _Thread_local float* scratch = NULL;
static _Thread_local size_t scratch_n = 0;

float* thread_scratch(size_t n) {
  if (n > scratch_n) {
    free(scratch);
    scratch = aligned_alloc(64, sizeof(float) * ((n + 15) / 16 * 16));
    scratch_n = scratch == NULL ? 0 : n;
  }
  return scratch;
}

/* exp on 16 lanes: x = n·ln2 + r, |r| ≤ ln2/2, Cephes' degree-6 polynomial for e^r (≤ 2 ulp), 2^n applied as
 * two factors so that both stay normal. Exact 0 below −87.33 (as expf underflows to denormals there, below
 * any tolerance that matters), +inf above 88.72, NaN kept. */
MULTI void exp_block(const float* in, float* out, long n) {
  for (long i = 0; i < n; i += 16) {
    long len = n - i < 16 ? n - i : 16;
    v16 x;
    if (len == 16) memcpy(&x, in + i, sizeof x);
    else {
      float tmp[16] = {0};
      memcpy(tmp, in + i, sizeof(float) * len);
      memcpy(&x, tmp, sizeof x);
    }
    const v16 vlo = (v16){0} + -87.33654f, vhi = (v16){0} + 88.72283f;
    v16 xc = SEL((vi16)(x == x), x, (v16){0}); /* NaN → 0 for the arithmetic; restored below */
    xc = SEL((vi16)(xc < vlo), vlo, xc);
    xc = SEL((vi16)(xc > vhi), vhi, xc);
    v16 f = xc * 1.44269504088896341f + 0.5f;
    vi16 t = __builtin_convertvector(f, vi16);
    vi16 nn = t + (vi16)(__builtin_convertvector(t, v16) > f); /* floor */
    v16 nf = __builtin_convertvector(nn, v16);
    v16 r = xc - nf * 0.693359375f - nf * -2.12194440e-4f;
    v16 p = (v16){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v16 y = p * r * r + r + 1.0f;
    vi16 h = nn >> 1, l = nn - h;
    y = y * (v16)((h + 127) << 23) * (v16)((l + 127) << 23);
    vi16 under = (vi16)(x < -87.33654f), over = (vi16)(x > 88.72283f), nan = (vi16)(x != x);
    vi16 yb = (vi16)y & ~under;
    yb = (yb & ~over) | (over & (vi16)((v16){0} + __builtin_inff()));
    yb = (yb & ~nan) | (nan & (vi16)x);
    if (len == 16) memcpy(out + i, &yb, sizeof yb);
    else {
      float tmp[16];
      memcpy(tmp, &yb, sizeof tmp);
      memcpy(out + i, tmp, sizeof(float) * len);
    }
  }
}

enum { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3 };

/* out[i] = a[i·sa] op b[i·sb] for i < n, sa / sb ∈ {0, 1} (the cases tfjs's broadcasting produces inner-most). */
MULTI static void binary_row(int op, const float* restrict a, long sa, const float* restrict b, long sb, float* restrict out, long n) {
#define LOOP(EXPR) \
  if (sa == 1 && sb == 1) for (long i = 0; i < n; i++) { float x = a[i], y = b[i]; out[i] = EXPR; } \
  else if (sa == 1) { float y = b[0]; for (long i = 0; i < n; i++) { float x = a[i]; out[i] = EXPR; } } \
  else if (sb == 1) { float x = a[0]; for (long i = 0; i < n; i++) { float y = b[i]; out[i] = EXPR; } } \
  else { float x = a[0], y = b[0]; for (long i = 0; i < n; i++) out[i] = EXPR; }
  switch (op) {
    case OP_ADD: LOOP(x + y) break;
    case OP_SUB: LOOP(x - y) break;
    case OP_MUL: LOOP(x * y) break;
    default: LOOP(x / y) break;
  }
#undef LOOP
}

#define MAX_RANK 8
typedef struct {
  char* heap;
  int kind; /* 0 exp, 1 binary, 2 gather, 3 sum */
  int op, rank;
  long a_off, b_off, out_off, n;
  long shape[MAX_RANK], sa[MAX_RANK], sb[MAX_RANK]; /* element strides; the last dim's are 0 or 1 */
  /* gather; sum (x [outer, dim, inner] → out [outer, inner]) */
  long outer, dim, inner, nidx, idx_off;
  int elem;
} ew_job;

/* Rows of the collapsed output (all dims but the last), [r0, r1): the row index is split into per-dim
 * counters once, then advanced like an odometer (no division per row). */
static void binary_rows(ew_job* j, long r0, long r1) {
  int last = j->rank - 1;
  long inner = j->shape[last];
  const float* a = (const float*)(j->heap + j->a_off);
  const float* b = (const float*)(j->heap + j->b_off);
  float* out = (float*)(j->heap + j->out_off);
  long idx[MAX_RANK] = {0}, oa = 0, ob = 0, rem = r0;
  for (int d = last - 1; d >= 0; d--) {
    idx[d] = rem % j->shape[d];
    rem /= j->shape[d];
    oa += idx[d] * j->sa[d];
    ob += idx[d] * j->sb[d];
  }
  for (long r = r0; r < r1; r++) {
    binary_row(j->op, a + oa, j->sa[last], b + ob, j->sb[last], out + r * inner, inner);
    for (int d = last - 1; d >= 0; d--) {
      oa += j->sa[d];
      ob += j->sb[d];
      if (++idx[d] < j->shape[d]) break;
      oa -= j->sa[d] * j->shape[d];
      ob -= j->sb[d] * j->shape[d];
      idx[d] = 0;
    }
  }
}

static void sum_block(const float* x, float* out, long dim, long inner, long o0, long o1, long i0, long i1);

static void ew_task(void* ctx, int index, int count) {
  ew_job* j = ctx;
  if (j->kind == 0) {
    long per = ((j->n + count - 1) / count + 15) / 16 * 16;
    long s0 = index * per, s1 = s0 + per < j->n ? s0 + per : j->n;
    if (s0 < s1) exp_block((const float*)(j->heap + j->a_off) + s0, (float*)(j->heap + j->out_off) + s0, s1 - s0);
  } else if (j->kind == 1) {
    long rows = j->n / j->shape[j->rank - 1];
    long per = (rows + count - 1) / count;
    long r0 = index * per, r1 = r0 + per < rows ? r0 + per : rows;
    if (r0 < r1) binary_rows(j, r0, r1);
  } else if (j->kind == 3) {
    const float* x = (const float*)(j->heap + j->a_off);
    float* out = (float*)(j->heap + j->out_off);
    if (j->outer >= count || j->inner == 1) {
      long per = (j->outer + count - 1) / count;
      long o0 = index * per, o1 = o0 + per < j->outer ? o0 + per : j->outer;
      if (o0 < o1) sum_block(x, out, j->dim, j->inner, o0, o1, 0, j->inner);
    } else {
      long per = ((j->inner + count - 1) / count + 15) / 16 * 16;
      long i0 = index * per, i1 = i0 + per < j->inner ? i0 + per : j->inner;
      if (i0 < i1) sum_block(x, out, j->dim, j->inner, 0, j->outer, i0, i1);
    }
  } else {
    long rows = j->outer * j->nidx;
    long per = (rows + count - 1) / count;
    long r0 = index * per, r1 = r0 + per < rows ? r0 + per : rows;
    const int32_t* idx = (const int32_t*)(j->heap + j->idx_off);
    size_t bytes = (size_t)j->inner * j->elem;
    for (long r = r0; r < r1; r++) {
      long o = r / j->nidx, i = r % j->nidx;
      memcpy(j->heap + j->out_off + r * bytes, j->heap + j->a_off + (o * j->dim + idx[i]) * bytes, bytes);
    }
  }
}

/* Σ over the middle axis of x [outer, dim, inner] for outer rows [o0, o1) and inner columns [i0, i1). */
MULTI static void sum_block(const float* x, float* out, long dim, long inner, long o0, long o1, long i0, long i1) {
  for (long o = o0; o < o1; o++) {
    const float* xo = x + o * dim * inner;
    float* oo = out + o * inner;
    if (inner == 1) {
      /* A row sum: 16 partial sums, then pairwise. */
      float acc[16] = {0};
      long m = 0;
      for (; m + 16 <= dim; m += 16) for (int l = 0; l < 16; l++) acc[l] += xo[m + l];
      for (; m < dim; m++) acc[m & 15] += xo[m];
      for (int w = 8; w > 0; w /= 2) for (int l = 0; l < w; l++) acc[l] += acc[l + w];
      oo[0] = acc[0];
    } else {
      for (long i = i0; i < i1; i++) oo[i] = 0;
      for (long m = 0; m < dim; m++) {
        const float* row = xo + m * inner;
        for (long i = i0; i < i1; i++) oo[i] += row[i];
      }
    }
  }
}

/* Splits elementwise work only when it is large enough to pay for the hand-off. */
static int ew_parts(long work) { return work >= (1L << 16) && nthreads > 1 ? 4 * nthreads : 1; }

/* ------------------------------------------------------------------------------------------------ */
/* N-API glue. */


char* heap_of(napi_env env, napi_value v, size_t* bytes) {
  napi_typedarray_type type;
  size_t length, offset;
  void* data;
  napi_value ab;
  napi_valuetype kind;
  /* null: absolute addresses (the cpu backend's typed arrays); the JS side has checked every operand's bounds. */
  if (napi_typeof(env, v, &kind) == napi_ok && kind == napi_null) {
    *bytes = (size_t)LONG_MAX;
    return ABS_BASE;
  }
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset) != napi_ok) {
    napi_throw_type_error(env, NULL, "r1kernels: the heap must be a typed array over the wasm memory");
    return NULL;
  }
  size_t elem = type == napi_float32_array || type == napi_int32_array || type == napi_uint32_array ? 4 : type == napi_float64_array ? 8 : 1;
  *bytes = length * elem;
  return data;
}

/* address(typedArray): where its bytes are, as an offset from ABS_BASE (exact in a double: user-space pointers
 * are < 2^47); 0 for an empty array. V8 moves a typed array's bytes only while they live inside its heap (≤ 64
 * bytes); reading the data here externalises them, so the address stays valid for the array's lifetime. */
static napi_value js_address(napi_env env, napi_callback_info info) {
  napi_value argv[1], r;
  if (!get_args(env, info, 1, argv, "address")) return NULL;
  napi_typedarray_type type;
  size_t length, offset;
  void* data;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &offset) != napi_ok) {
    napi_throw_type_error(env, NULL, "r1kernels.address: expected a typed array");
    return NULL;
  }
  CHECK(napi_create_double(env, length == 0 || data == NULL ? 0.0 : (double)((uintptr_t)data - (uintptr_t)ABS_BASE), &r));
  return r;
}

/* A number argument (booleans read as 0 / 1). */
double num(napi_env env, napi_value v) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    bool b = false;
    if (napi_get_value_bool(env, v, &b) == napi_ok) d = b ? 1 : 0;
  }
  return d;
}

/* gemm(heap, batch, m, n, k, ta, tb, aOff, aStride, bOff, bStride, cOff, cStride): offsets / strides in bytes. */
static napi_value js_gemm(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 13) {
    napi_throw_type_error(env, NULL, "r1kernels.gemm: expected 13 arguments");
    return NULL;
  }
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  gemm_job j;
  j.heap = heap;
  j.batch = (int)num(env, argv[1]);
  j.m = (int)num(env, argv[2]);
  j.n = (int)num(env, argv[3]);
  j.k = (int)num(env, argv[4]);
  j.ta = num(env, argv[5]) != 0;
  j.tb = num(env, argv[6]) != 0;
  j.a_off = (long)num(env, argv[7]);
  j.a_stride = (long)num(env, argv[8]);
  j.b_off = (long)num(env, argv[9]);
  j.b_stride = (long)num(env, argv[10]);
  j.c_off = (long)num(env, argv[11]);
  j.c_stride = (long)num(env, argv[12]);
  if (j.batch < 0 || j.m < 0 || j.n < 0 || j.k < 0) {
    napi_throw_range_error(env, NULL, "r1kernels.gemm: negative size");
    return NULL;
  }
  /* Bounds: the last byte each operand touches must lie in the heap. */
  long last = j.batch > 0 ? j.batch - 1 : 0;
  long ends[3] = {j.a_off + last * j.a_stride + 4L * j.m * j.k, j.b_off + last * j.b_stride + 4L * j.k * j.n, j.c_off + last * j.c_stride + 4L * j.m * j.n};
  if (j.a_off < 0 || j.b_off < 0 || j.c_off < 0 || j.a_stride < 0 || j.b_stride < 0 || j.c_stride < 0 ||
      ends[0] > (long)bytes || ends[1] > (long)bytes || ends[2] > (long)bytes) {
    napi_throw_range_error(env, NULL, "r1kernels.gemm: an operand lies outside the heap");
    return NULL;
  }
  double flops = 2.0 * j.batch * j.m * j.n * j.k;
  /* Below a few MFLOP the hand-off to the other thread costs more than it saves. */
  int parts = flops < 4e6 || nthreads == 1 ? 1 : nthreads;
  /* A few rows stream B from memory (see few_rows_gemm): two threads stream it twice as fast from ~1 MFLOP. */
  if (j.batch == 1 && j.m <= FEW_ROWS && !j.ta && !j.tb && flops >= 1e6 && nthreads > 1) parts = nthreads;
  /* One product: split the larger side of C, one part per thread (each part packs its own share of the
   * operands, so more parts would repack more). Batches: one product per chunk. */
  j.split = j.batch > 1 ? 0 : j.m >= j.n ? 1 : 2;
  if (j.batch == 1 && (j.m >= j.n ? j.m : j.n) < 32) parts = 1;
  if (parts > 1 && j.batch > 1) parts = j.batch;
  /* OpenBLAS called from both threads at once serialises on its buffer lock: measured on 2 cores, 64³ × 16
   * products ran at 46 GFLOP/s that way against 130 on the addon's GEMM; only large single products (halves
   * of ≥ 30 MFLOP) amortise it (1024³: 144 GFLOP/s). */
  j.own = parts > 1 && !(j.batch == 1 && flops >= 6e7);
  parallel(gemm_task, &j, parts);
  return NULL;
}


static int64_t num64(napi_env env, napi_value v) { return (int64_t)num(env, v); }

int get_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv, const char* name) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    char msg[128];
    snprintf(msg, sizeof msg, "r1kernels.%s: expected %zu arguments", name, want);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

int in_heap(napi_env env, long off, long bytes, size_t heap_bytes, const char* name) {
  if (off < 0 || bytes < 0 || off + bytes > (long)heap_bytes) {
    char msg[128];
    snprintf(msg, sizeof msg, "r1kernels.%s: an operand lies outside the heap", name);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

/* exp(heap, xOff, outOff, n) */
static napi_value js_exp(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "exp")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  ew_job j = {.heap = heap, .kind = 0, .a_off = num64(env, argv[1]), .out_off = num64(env, argv[2]), .n = num64(env, argv[3])};
  if (!in_heap(env, j.a_off, 4 * j.n, bytes, "exp") || !in_heap(env, j.out_off, 4 * j.n, bytes, "exp")) return NULL;
  parallel(ew_task, &j, ew_parts(j.n));
  return NULL;
}

/* binary(heap, op, aOff, bOff, outOff, desc: Int32Array [rank, shape…, aStrides…, bStrides…]) */
static napi_value js_binary(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv, "binary")) return NULL;
  size_t bytes, dbytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  int32_t* desc = (int32_t*)heap_of(env, argv[5], &dbytes);
  if (desc == NULL) return NULL;
  ew_job j = {.heap = heap, .kind = 1, .op = (int)num(env, argv[1]), .a_off = num64(env, argv[2]), .b_off = num64(env, argv[3]), .out_off = num64(env, argv[4])};
  j.rank = desc[0];
  if (j.rank < 1 || j.rank > MAX_RANK || dbytes < sizeof(int32_t) * (1 + 3 * (size_t)j.rank) || j.op < 0 || j.op > 3) {
    napi_throw_range_error(env, NULL, "r1kernels.binary: bad descriptor");
    return NULL;
  }
  long ea = 1, eb = 1; /* one past the last element each operand reads */
  j.n = 1;
  for (int d = 0; d < j.rank; d++) {
    j.shape[d] = desc[1 + d];
    j.sa[d] = desc[1 + j.rank + d];
    j.sb[d] = desc[1 + 2 * j.rank + d];
    j.n *= j.shape[d];
    if (j.shape[d] > 0) { ea += (j.shape[d] - 1) * j.sa[d]; eb += (j.shape[d] - 1) * j.sb[d]; }
  }
  if (j.n == 0) return NULL;
  if ((j.sa[j.rank - 1] != 0 && j.sa[j.rank - 1] != 1) || (j.sb[j.rank - 1] != 0 && j.sb[j.rank - 1] != 1)) {
    napi_throw_range_error(env, NULL, "r1kernels.binary: inner strides must be 0 or 1");
    return NULL;
  }
  if (!in_heap(env, j.a_off, 4 * ea, bytes, "binary") || !in_heap(env, j.b_off, 4 * eb, bytes, "binary") || !in_heap(env, j.out_off, 4 * j.n, bytes, "binary")) return NULL;
  long rows = j.n / j.shape[j.rank - 1];
  int parts = ew_parts(j.n);
  parallel(ew_task, &j, rows < parts ? (int)rows : parts);
  return NULL;
}

/* gather(heap, elemBytes, xOff, outer, dim, inner, idxOff, nIdx, outOff) → −1, or the first index out of [0, dim) */
static napi_value js_gather(napi_env env, napi_callback_info info) {
  napi_value argv[9], r;
  if (!get_args(env, info, 9, argv, "gather")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  ew_job j = {.heap = heap, .kind = 2, .elem = (int)num(env, argv[1]), .a_off = num64(env, argv[2]), .outer = num64(env, argv[3]), .dim = num64(env, argv[4]),
              .inner = num64(env, argv[5]), .idx_off = num64(env, argv[6]), .nidx = num64(env, argv[7]), .out_off = num64(env, argv[8])};
  long rowb = j.inner * j.elem;
  if (!in_heap(env, j.a_off, j.outer * j.dim * rowb, bytes, "gather") || !in_heap(env, j.idx_off, 4 * j.nidx, bytes, "gather") ||
      !in_heap(env, j.out_off, j.outer * j.nidx * rowb, bytes, "gather")) return NULL;
  const int32_t* idx = (const int32_t*)(heap + j.idx_off);
  for (long i = 0; i < j.nidx; i++) {
    if (idx[i] < 0 || idx[i] >= j.dim) {
      CHECK(napi_create_double(env, (double)idx[i], &r));
      return r;
    }
  }
  parallel(ew_task, &j, ew_parts(j.outer * j.nidx * j.inner));
  CHECK(napi_create_int32(env, -1, &r));
  return r;
}

/* sum(heap, xOff, outer, dim, inner, outOff): out[o, i] = Σ_m x[o, m, i] */
static napi_value js_sum(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv, "sum")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  ew_job j = {.heap = heap, .kind = 3, .a_off = num64(env, argv[1]), .outer = num64(env, argv[2]), .dim = num64(env, argv[3]), .inner = num64(env, argv[4]), .out_off = num64(env, argv[5])};
  if (j.outer < 0 || j.dim < 0 || j.inner < 0 || !in_heap(env, j.a_off, 4 * j.outer * j.dim * j.inner, bytes, "sum") || !in_heap(env, j.out_off, 4 * j.outer * j.inner, bytes, "sum")) return NULL;
  long work = j.outer * j.dim * j.inner;
  int parts = ew_parts(work);
  if (j.inner == 1 && j.outer < parts) parts = (int)(j.outer > 0 ? j.outer : 1);
  parallel(ew_task, &j, parts);
  return NULL;
}

static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, v;
  CHECK(napi_create_object(env, &o));
  if (blas_sgemm != NULL) {
    CHECK(napi_create_string_utf8(env, blas_name, NAPI_AUTO_LENGTH, &v));
  } else {
    CHECK(napi_get_null(env, &v));
  }
  CHECK(napi_set_named_property(env, o, "blas", v));
  CHECK(napi_create_string_utf8(env, blas_error, NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_named_property(env, o, "blasError", v));
  CHECK(napi_create_int32(env, nthreads, &v));
  CHECK(napi_set_named_property(env, o, "threads", v));
  return o;
}

/* useBlas(on): switches between BLAS (when loaded) and the own GEMM; returns whether BLAS is now used. */
static napi_value js_use_blas(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], r;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  blas_sgemm = argc == 1 && num(env, argv[0]) != 0 ? blas_loaded : NULL;
  CHECK(napi_get_boolean(env, blas_sgemm != NULL, &r));
  return r;
}

/* ------------------------------------------------------------------------------------------------ */
/* poolCheck(jobs, maxCount, seed): runs `jobs` pool jobs of 1..maxCount chunks, each chunk spinning a random
 * while, and counts the contract's violations: a chunk run other than exactly once, or a chunk still running
 * when parallel() has returned. The thread pool is the one piece every kernel shares; this is its test. */

typedef struct {
  _Atomic int* hits;
  atomic_int* running;
  uint32_t seed;
} check_job;

static void check_task(void* ctx, int index, int count) {
  (void)count;
  check_job* j = ctx;
  atomic_fetch_add(j->running, 1);
  atomic_fetch_add(&j->hits[index], 1);
  uint32_t x = j->seed ^ (uint32_t)index * 2654435761u;
  int spins = (int)((x >> 7) % 24);
  for (volatile int i = 0; i < spins; i++) {}
  if ((x & 1023) == 0) sched_yield();
  atomic_fetch_sub(j->running, 1);
}

static napi_value js_pool_check(napi_env env, napi_callback_info info) {
  napi_value argv[3], r;
  if (!get_args(env, info, 3, argv, "poolCheck")) return NULL;
  long jobs = (long)num(env, argv[0]);
  int max_count = (int)num(env, argv[1]);
  uint32_t seed = (uint32_t)num(env, argv[2]);
  if (jobs < 0 || max_count < 1 || max_count > 4096) {
    napi_throw_range_error(env, NULL, "r1kernels.poolCheck: jobs ≥ 0 and 1 ≤ maxCount ≤ 4096");
    return NULL;
  }
  _Atomic int* hits = calloc((size_t)max_count, sizeof *hits);
  atomic_int running = 0;
  if (hits == NULL) {
    napi_throw_error(env, NULL, "r1kernels.poolCheck: out of memory");
    return NULL;
  }
  long violations = 0;
  for (long n = 0; n < jobs; n++) {
    seed = seed * 1664525u + 1013904223u;
    int count = 1 + (int)((seed >> 8) % (uint32_t)max_count);
    for (int i = 0; i < count; i++) atomic_store(&hits[i], 0);
    check_job j = {.hits = hits, .running = &running, .seed = seed};
    parallel(check_task, &j, count);
    if (atomic_load(&running) != 0) violations++;
    for (int i = 0; i < count; i++) if (atomic_load(&hits[i]) != 1) violations++;
    /* A chunk that outlived its job would now be writing into hits and running: wait it out, then count it. */
    for (int spin = 0; spin < 1000 && atomic_load(&running) != 0; spin++) sched_yield();
  }
  free(hits);
  CHECK(napi_create_double(env, (double)violations, &r));
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  static int started = 0;
  if (!started) {
    started = 1;
    blas_load();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char* env_threads = getenv("R1FLOW_THREADS");
    int n = env_threads != NULL ? atoi(env_threads) : (int)(cores > 0 ? cores : 1);
    pool_start(n < 1 ? 1 : n);
  }
  napi_property_descriptor props[] = {
    {"gemm", NULL, js_gemm, NULL, NULL, NULL, napi_default, NULL},
    {"address", NULL, js_address, NULL, NULL, NULL, napi_default, NULL},
    {"exp", NULL, js_exp, NULL, NULL, NULL, napi_default, NULL},
    {"binary", NULL, js_binary, NULL, NULL, NULL, napi_default, NULL},
    {"sum", NULL, js_sum, NULL, NULL, NULL, napi_default, NULL},
    {"gather", NULL, js_gather, NULL, NULL, NULL, napi_default, NULL},
    {"useBlas", NULL, js_use_blas, NULL, NULL, NULL, napi_default, NULL},
    {"info", NULL, js_info, NULL, NULL, NULL, napi_default, NULL},
    {"poolCheck", NULL, js_pool_check, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  if (r1_init_attention(env, exports) != napi_ok || r1_init_fused(env, exports) != napi_ok || r1_init_optim(env, exports) != napi_ok || r1_init_decode(env, exports) != napi_ok ||
      r1_init_layout(env, exports) != napi_ok || r1_init_reduce(env, exports) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
