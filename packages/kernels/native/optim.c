/*
 * The optimizer's update and the embedding's gradient, in place on the wasm heap.
 *
 * adamw: one pass over a weight instead of the ~12 elementwise kernels (each a full read and write of the
 * weight) that the composite runs. The arithmetic is float32 in the composite's exact order, with no fused
 * multiply-add, so results are bitwise those of the composite.
 *
 * segmentSum: out[s, :] = Σ_{i : ids[i] = s} x[i, :], the gradient of an embedding lookup, which tfjs's wasm
 * backend lacks (`UnsortedSegmentSum`). Rows are added in index order whatever the thread count (the threads
 * split the columns), so the result is deterministic.
 */
#pragma GCC optimize("fp-contract=off")
#include "common.h"

typedef struct {
  char* heap;
  long p_off, m_off, v_off, g_off, po_off, mo_off, vo_off, n;
  float b1, nb1, b2, nb2, c1, c2, eps, decay, lr, scale;
  int scaled, decayed;
} adam_job;

/*   g ← g·scale; m ← m·β1 + g·(1−β1); v ← v·β2 + g²·(1−β2); θ ← θ·decay − ((m / c1) / (√(v / c2) + ε))·lr */
static void adam_task(void* ctx, int index, int count) {
  adam_job* j = ctx;
  long per = (j->n + count - 1) / count;
  long i0 = index * per, i1 = i0 + per < j->n ? i0 + per : j->n;
  const float* p = (const float*)(j->heap + j->p_off);
  const float* m = (const float*)(j->heap + j->m_off);
  const float* v = (const float*)(j->heap + j->v_off);
  const float* g = (const float*)(j->heap + j->g_off);
  float* po = (float*)(j->heap + j->po_off);
  float* mo = (float*)(j->heap + j->mo_off);
  float* vo = (float*)(j->heap + j->vo_off);
  for (long i = i0; i < i1; i++) {
    float gi = j->scaled ? g[i] * j->scale : g[i];
    float mi = m[i] * j->b1 + gi * j->nb1;
    float vi = v[i] * j->b2 + (gi * gi) * j->nb2;
    float update = (mi / j->c1) / (sqrtf(vi / j->c2) + j->eps);
    float pi = j->decayed ? p[i] * j->decay : p[i];
    mo[i] = mi;
    vo[i] = vi;
    po[i] = pi - update * j->lr;
  }
}

/* adamw(heap, pOff, mOff, vOff, gOff, pOut, mOut, vOut, n, hyper: Float64Array [β1, 1−β1, β2, 1−β2, c1, c2, ε, decay, lr, scale]);
 * decay 1 skips the decay product, scale 1 the scaling (as the composite does). */
static napi_value js_adamw(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!get_args(env, info, 10, argv, "adamw")) return NULL;
  size_t bytes, hb;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  double* h = (double*)heap_of(env, argv[9], &hb);
  if (h == NULL) return NULL;
  if (hb < 10 * sizeof(double)) {
    napi_throw_range_error(env, NULL, "r1kernels.adamw: expected 10 hyper-parameters");
    return NULL;
  }
  adam_job j = {.heap = heap, .p_off = (long)num(env, argv[1]), .m_off = (long)num(env, argv[2]), .v_off = (long)num(env, argv[3]),
                .g_off = (long)num(env, argv[4]), .po_off = (long)num(env, argv[5]), .mo_off = (long)num(env, argv[6]),
                .vo_off = (long)num(env, argv[7]), .n = (long)num(env, argv[8])};
  j.b1 = (float)h[0]; j.nb1 = (float)h[1]; j.b2 = (float)h[2]; j.nb2 = (float)h[3]; j.c1 = (float)h[4];
  j.c2 = (float)h[5]; j.eps = (float)h[6]; j.decay = (float)h[7]; j.lr = (float)h[8]; j.scale = (float)h[9];
  j.scaled = h[9] != 1.0;
  j.decayed = h[7] != 1.0;
  long offs[7] = {j.p_off, j.m_off, j.v_off, j.g_off, j.po_off, j.mo_off, j.vo_off};
  for (int i = 0; i < 7; i++) if (!in_heap(env, offs[i], 4 * j.n, bytes, "adamw")) return NULL;
  int parts = j.n >= (1L << 16) && nthreads > 1 ? nthreads : 1;
  parallel(adam_task, &j, parts);
  return NULL;
}

typedef struct {
  char* heap;
  long x_off, ids_off, out_off, rows, inner, segments;
} seg_job;

static void seg_task(void* ctx, int index, int count) {
  seg_job* j = ctx;
  long per = ((j->inner + count - 1) / count + 15) / 16 * 16;
  long c0 = index * per, c1 = c0 + per < j->inner ? c0 + per : j->inner;
  if (c0 >= c1) return;
  const float* x = (const float*)(j->heap + j->x_off);
  const int32_t* ids = (const int32_t*)(j->heap + j->ids_off);
  float* out = (float*)(j->heap + j->out_off);
  for (long s = 0; s < j->segments; s++) memset(out + s * j->inner + c0, 0, sizeof(float) * (c1 - c0));
  for (long i = 0; i < j->rows; i++) {
    int32_t s = ids[i];
    if (s < 0 || s >= j->segments) continue; /* tfjs drops out-of-range ids */
    float* o = out + s * j->inner;
    const float* xi = x + i * j->inner;
    for (long c = c0; c < c1; c++) o[c] += xi[c];
  }
}

/* segmentSum(heap, xOff, idsOff, rows, inner, segments, outOff): out [segments, inner] */
static napi_value js_segment_sum(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv, "segmentSum")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  seg_job j = {.heap = heap, .x_off = (long)num(env, argv[1]), .ids_off = (long)num(env, argv[2]), .rows = (long)num(env, argv[3]),
               .inner = (long)num(env, argv[4]), .segments = (long)num(env, argv[5]), .out_off = (long)num(env, argv[6])};
  if (!in_heap(env, j.x_off, 4 * j.rows * j.inner, bytes, "segmentSum") || !in_heap(env, j.ids_off, 4 * j.rows, bytes, "segmentSum") ||
      !in_heap(env, j.out_off, 4 * j.segments * j.inner, bytes, "segmentSum")) return NULL;
  int parts = j.rows * j.inner >= (1L << 16) && nthreads > 1 && j.inner >= 32 ? nthreads : 1;
  parallel(seg_task, &j, parts);
  return NULL;
}

napi_status r1_init_optim(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"adamw", NULL, js_adamw, NULL, NULL, NULL, napi_default, NULL},
    {"segmentSum", NULL, js_segment_sum, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
