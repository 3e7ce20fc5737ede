/*
 * Fused elementwise ops of the transformer block, forward and backward, each one pass over its tensors where
 * the composite runs 5–15 kernels (and allocates as many intermediates):
 *
 *   RMSNorm  y = x · r ⊙ g,  r = 1 / sqrt(mean(x²) + ε)                          x, y [N, C], g [C]
 *            dx = r·(dy ⊙ g) − x · r³ · Σ(dy ⊙ g ⊙ x) / C,  dg = Σ_rows dy ⊙ x · r
 *   SwiGLU   y = g·σ(g) ⊙ u                                                      g, u, y [n]
 *            dg = dy ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))),  du = dy ⊙ g·σ(g)
 *   RoPE     y = x ⊙ cos + [−x₂, x₁] ⊙ sin                     x, y [B, T, H, hd], cos, sin [1 or B, T, 1, hd]
 *            dx = dy ⊙ cos + [z₂, −z₁],  z = dy ⊙ sin
 *
 * Sums run over 16 lane accumulators added pairwise, and dg's partial sums are per chunk of rows, chunks fixed
 * by the row count alone and added in chunk order: results never depend on the thread count or timing.
 */
#include "common.h"

/* Runs task over `count` chunks: on the pool when `work` (elements) pays for the hand-off, else here in order. */
static void run(task_fn task, void* ctx, int count, long work) {
  if (work >= (1L << 16) && nthreads > 1) parallel(task, ctx, count);
  else for (int i = 0; i < count; i++) task(ctx, i, count);
}

/* Rows per chunk: at most 64 chunks, at least 16 rows each (a function of the row count only). */
static long rows_per_chunk(long rows) {
  long per = (rows + 63) / 64;
  return per < 16 ? 16 : per;
}

/* Σ a[i]·b[i]·(c ? c[i] : 1), in a fixed order. */
MULTI static float dot(const float* a, const float* b, const float* c, long n) {
  float acc[16] = {0};
  long i = 0;
  if (c == NULL) {
    for (; i + 16 <= n; i += 16) for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 15] += a[i] * b[i];
  } else {
    for (; i + 16 <= n; i += 16) for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l] * c[i + l];
    for (; i < n; i++) acc[i & 15] += a[i] * b[i] * c[i];
  }
  for (int w = 8; w > 0; w /= 2) for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

/* ------------------------------------------------------------------------------------------------ */
/* RMSNorm over the last axis. */

typedef struct {
  char* heap;
  long x, g, y, dy, dx; /* byte offsets */
  int backward;
  long rows, c, per;
  float eps;
  float* partial; /* [chunks, C]: each chunk's share of dg */
} rms_job;

MULTI static void rms_rows(const rms_job* j, long r0, long r1, float* pg) {
  long c = j->c;
  const float* g = (const float*)(j->heap + j->g);
  if (pg != NULL) memset(pg, 0, sizeof(float) * c);
  for (long r = r0; r < r1; r++) {
    const float* x = (const float*)(j->heap + j->x) + r * c;
    float rs = 1.0f / sqrtf(dot(x, x, NULL, c) / (float)c + j->eps);
    if (!j->backward) {
      float* y = (float*)(j->heap + j->y) + r * c;
      for (long i = 0; i < c; i++) y[i] = x[i] * rs * g[i];
      continue;
    }
    const float* dy = (const float*)(j->heap + j->dy) + r * c;
    float* dx = (float*)(j->heap + j->dx) + r * c;
    float k = rs * rs * rs * dot(dy, g, x, c) / (float)c;
    for (long i = 0; i < c; i++) {
      dx[i] = rs * (g[i] * dy[i]) - x[i] * k;
      pg[i] += dy[i] * x[i] * rs;
    }
  }
}

static void rms_task(void* ctx, int index, int count) {
  (void)count;
  rms_job* j = ctx;
  long r0 = index * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
  if (r0 < r1) rms_rows(j, r0, r1, j->partial == NULL ? NULL : j->partial + index * j->c);
}

/* rmsNorm(heap, xOff, gOff, yOff, rows, C, eps) */
static napi_value js_rms_norm(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv, "rmsNorm")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  rms_job j = {.heap = heap, .x = (long)num(env, argv[1]), .g = (long)num(env, argv[2]), .y = (long)num(env, argv[3]),
               .rows = (long)num(env, argv[4]), .c = (long)num(env, argv[5]), .eps = (float)num(env, argv[6])};
  long n = j.rows * j.c;
  if (j.rows < 0 || j.c < 1 || !in_heap(env, j.x, 4 * n, bytes, "rmsNorm") || !in_heap(env, j.g, 4 * j.c, bytes, "rmsNorm") ||
      !in_heap(env, j.y, 4 * n, bytes, "rmsNorm")) return NULL;
  j.per = rows_per_chunk(j.rows);
  run(rms_task, &j, (int)((j.rows + j.per - 1) / j.per), n);
  return NULL;
}

/* rmsNormGrad(heap, dyOff, xOff, gOff, dxOff, dgOff, rows, C, eps) */
static napi_value js_rms_norm_grad(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!get_args(env, info, 9, argv, "rmsNormGrad")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  rms_job j = {.heap = heap, .backward = 1, .dy = (long)num(env, argv[1]), .x = (long)num(env, argv[2]), .g = (long)num(env, argv[3]), .dx = (long)num(env, argv[4]),
               .rows = (long)num(env, argv[6]), .c = (long)num(env, argv[7]), .eps = (float)num(env, argv[8])};
  long dg_off = (long)num(env, argv[5]), n = j.rows * j.c;
  if (j.rows < 0 || j.c < 1 || !in_heap(env, j.dy, 4 * n, bytes, "rmsNormGrad") || !in_heap(env, j.x, 4 * n, bytes, "rmsNormGrad") ||
      !in_heap(env, j.g, 4 * j.c, bytes, "rmsNormGrad") || !in_heap(env, j.dx, 4 * n, bytes, "rmsNormGrad") ||
      !in_heap(env, dg_off, 4 * j.c, bytes, "rmsNormGrad")) return NULL;
  j.per = rows_per_chunk(j.rows);
  int chunks = (int)((j.rows + j.per - 1) / j.per);
  j.partial = malloc(sizeof(float) * (size_t)(chunks > 0 ? chunks : 1) * (size_t)j.c);
  if (j.partial == NULL) {
    napi_throw_error(env, NULL, "r1kernels.rmsNormGrad: out of memory");
    return NULL;
  }
  run(rms_task, &j, chunks, n);
  float* dg = (float*)(heap + dg_off);
  memset(dg, 0, sizeof(float) * j.c);
  for (int k = 0; k < chunks; k++) for (long i = 0; i < j.c; i++) dg[i] += j.partial[k * j.c + i];
  free(j.partial);
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* SwiGLU. */

typedef struct {
  char* heap;
  long g, u, y, dy, dg, du; /* byte offsets */
  int backward;
  long n, per;
} swiglu_job;

#define SW_BLOCK 256

MULTI static void swiglu_range(const swiglu_job* j, long i0, long i1) {
  const float* g = (const float*)(j->heap + j->g);
  const float* u = (const float*)(j->heap + j->u);
  float e[SW_BLOCK];
  for (long b = i0; b < i1; b += SW_BLOCK) {
    long m = i1 - b < SW_BLOCK ? i1 - b : SW_BLOCK;
    for (long i = 0; i < m; i++) e[i] = -g[b + i];
    exp_block(e, e, m); /* σ(g) = 1 / (1 + e^−g); e^−g = +inf below g ≈ −88.7 gives σ = 0 */
    if (!j->backward) {
      float* y = (float*)(j->heap + j->y) + b;
      for (long i = 0; i < m; i++) y[i] = g[b + i] * (1.0f / (1.0f + e[i])) * u[b + i];
    } else {
      const float* dy = (const float*)(j->heap + j->dy) + b;
      float* dg = (float*)(j->heap + j->dg) + b;
      float* du = (float*)(j->heap + j->du) + b;
      for (long i = 0; i < m; i++) {
        float s = 1.0f / (1.0f + e[i]), gi = g[b + i];
        dg[i] = dy[i] * u[b + i] * (s * (1.0f + gi * (1.0f - s)));
        du[i] = dy[i] * (gi * s);
      }
    }
  }
}

static void swiglu_task(void* ctx, int index, int count) {
  (void)count;
  swiglu_job* j = ctx;
  long i0 = index * j->per, i1 = i0 + j->per < j->n ? i0 + j->per : j->n;
  if (i0 < i1) swiglu_range(j, i0, i1);
}

static long swiglu_split(swiglu_job* j) {
  int parts = j->n >= (1L << 16) && nthreads > 1 ? 4 * nthreads : 1;
  j->per = ((j->n + parts - 1) / parts + 15) / 16 * 16;
  return j->per > 0 ? (j->n + j->per - 1) / j->per : 0;
}

/* swiglu(heap, gateOff, upOff, yOff, n) */
static napi_value js_swiglu(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv, "swiglu")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  swiglu_job j = {.heap = heap, .g = (long)num(env, argv[1]), .u = (long)num(env, argv[2]), .y = (long)num(env, argv[3]), .n = (long)num(env, argv[4])};
  if (!in_heap(env, j.g, 4 * j.n, bytes, "swiglu") || !in_heap(env, j.u, 4 * j.n, bytes, "swiglu") || !in_heap(env, j.y, 4 * j.n, bytes, "swiglu")) return NULL;
  run(swiglu_task, &j, (int)swiglu_split(&j), j.n);
  return NULL;
}

/* swigluGrad(heap, dyOff, gateOff, upOff, dGateOff, dUpOff, n) */
static napi_value js_swiglu_grad(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv, "swigluGrad")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  swiglu_job j = {.heap = heap, .backward = 1, .dy = (long)num(env, argv[1]), .g = (long)num(env, argv[2]), .u = (long)num(env, argv[3]),
                  .dg = (long)num(env, argv[4]), .du = (long)num(env, argv[5]), .n = (long)num(env, argv[6])};
  long b = 4 * j.n;
  if (!in_heap(env, j.dy, b, bytes, "swigluGrad") || !in_heap(env, j.g, b, bytes, "swigluGrad") || !in_heap(env, j.u, b, bytes, "swigluGrad") ||
      !in_heap(env, j.dg, b, bytes, "swigluGrad") || !in_heap(env, j.du, b, bytes, "swigluGrad")) return NULL;
  run(swiglu_task, &j, (int)swiglu_split(&j), j.n);
  return NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* RoPE, rotate-half form. */

typedef struct {
  char* heap;
  long x, cos, sin, y; /* byte offsets */
  long b, t, h, hd, cb; /* cb: the batch of cos / sin, 1 (broadcast) or b */
  int backward;
  long per;
} rope_job;

MULTI static void rope_rows(const rope_job* j, long r0, long r1) {
  long half = j->hd / 2;
  for (long r = r0; r < r1; r++) {
    long bi = r / j->t, ti = r % j->t;
    const float* c = (const float*)(j->heap + j->cos) + ((j->cb == 1 ? 0 : bi) * j->t + ti) * j->hd;
    const float* s = (const float*)(j->heap + j->sin) + ((j->cb == 1 ? 0 : bi) * j->t + ti) * j->hd;
    for (long hh = 0; hh < j->h; hh++) {
      const float* x = (const float*)(j->heap + j->x) + (r * j->h + hh) * j->hd;
      float* y = (float*)(j->heap + j->y) + (r * j->h + hh) * j->hd;
      if (!j->backward) {
        for (long i = 0; i < half; i++) y[i] = x[i] * c[i] - x[i + half] * s[i];
        for (long i = 0; i < half; i++) y[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
      } else {
        for (long i = 0; i < half; i++) y[i] = x[i] * c[i] + x[i + half] * s[i + half];
        for (long i = 0; i < half; i++) y[i + half] = x[i + half] * c[i + half] - x[i] * s[i];
      }
    }
  }
}

static void rope_task(void* ctx, int index, int count) {
  (void)count;
  rope_job* j = ctx;
  long rows = j->b * j->t, r0 = index * j->per, r1 = r0 + j->per < rows ? r0 + j->per : rows;
  if (r0 < r1) rope_rows(j, r0, r1);
}

/* rope(heap, xOff, cosOff, sinOff, yOff, B, T, H, hd, cosBatch, backward): backward maps dy to dx. */
static napi_value js_rope(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  if (!get_args(env, info, 11, argv, "rope")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  rope_job j = {.heap = heap, .x = (long)num(env, argv[1]), .cos = (long)num(env, argv[2]), .sin = (long)num(env, argv[3]), .y = (long)num(env, argv[4]),
                .b = (long)num(env, argv[5]), .t = (long)num(env, argv[6]), .h = (long)num(env, argv[7]), .hd = (long)num(env, argv[8]),
                .cb = (long)num(env, argv[9]), .backward = num(env, argv[10]) != 0};
  long n = j.b * j.t * j.h * j.hd, nc = j.cb * j.t * j.hd;
  if (j.b < 0 || j.t < 0 || j.h < 0 || j.hd < 0 || j.hd % 2 != 0 || (j.cb != 1 && j.cb != j.b)) {
    napi_throw_range_error(env, NULL, "r1kernels.rope: bad shape");
    return NULL;
  }
  if (!in_heap(env, j.x, 4 * n, bytes, "rope") || !in_heap(env, j.y, 4 * n, bytes, "rope") || !in_heap(env, j.cos, 4 * nc, bytes, "rope") ||
      !in_heap(env, j.sin, 4 * nc, bytes, "rope")) return NULL;
  long rows = j.b * j.t;
  if (rows == 0) return NULL;
  int parts = n >= (1L << 16) && nthreads > 1 ? 4 * nthreads : 1;
  j.per = (rows + parts - 1) / parts;
  run(rope_task, &j, (int)((rows + j.per - 1) / j.per), n);
  return NULL;
}

napi_status r1_init_fused(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"rmsNorm", NULL, js_rms_norm, NULL, NULL, NULL, napi_default, NULL},
    {"rmsNormGrad", NULL, js_rms_norm_grad, NULL, NULL, NULL, napi_default, NULL},
    {"swiglu", NULL, js_swiglu, NULL, NULL, NULL, napi_default, NULL},
    {"swigluGrad", NULL, js_swiglu_grad, NULL, NULL, NULL, napi_default, NULL},
    {"rope", NULL, js_rope, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
