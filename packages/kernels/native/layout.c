/*
 * Layout kernels: Transpose of 4-byte elements, in place on the heap (or at absolute addresses).
 *
 *   out[i₀, …, i_{r−1}] = x[Σ_d i_d · s_d]     (out row-major, s the input's element strides per output dim)
 *
 * The JavaScript side collapses the permutation first (neighbouring dims that stay neighbours merge), so the
 * common cases reach here as: contiguous rows moved whole ([B, T, H, hd] → [B, H, T, hd]: rows of hd floats,
 * memcpy), or a (batched) 2-D transpose (the last output dim strided in the input). The latter goes in tiles
 * of TR output rows × TC columns, so the TC input lines a tile reads stay in L1 across its TR rows.
 */
#include "common.h"

#define TR 16
#define TC 64
#define MAX_DIMS 8

typedef struct {
  char* heap;
  long x_off, out_off;
  int rank;
  long shape[MAX_DIMS], stride[MAX_DIMS]; /* output shape, input element stride per output dim */
  long rows, len;                         /* output rows (all dims but the last) and their length */
} transpose_job;

/* Input element offset of the first element of output row r. */
static long row_base(const transpose_job* j, long r) {
  long base = 0;
  for (int d = j->rank - 2; d >= 0; d--) {
    base += (r % j->shape[d]) * j->stride[d];
    r /= j->shape[d];
  }
  return base;
}

static void transpose_task(void* ctx, int index, int count) {
  const transpose_job* j = ctx;
  const int32_t* x = (const int32_t*)(j->heap + j->x_off);
  int32_t* out = (int32_t*)(j->heap + j->out_off);
  long blocks = (j->rows + TR - 1) / TR, per = (blocks + count - 1) / count;
  long b0 = index * per, b1 = b0 + per < blocks ? b0 + per : blocks;
  long s = j->stride[j->rank - 1], len = j->len;
  for (long b = b0; b < b1; b++) {
    long r0 = b * TR, r1 = r0 + TR < j->rows ? r0 + TR : j->rows;
    long base[TR];
    for (long r = r0; r < r1; r++) base[r - r0] = row_base(j, r);
    if (s == 1) {
      for (long r = r0; r < r1; r++) memcpy(out + r * len, x + base[r - r0], sizeof(int32_t) * (size_t)len);
      continue;
    }
    for (long c0 = 0; c0 < len; c0 += TC) {
      long c1 = c0 + TC < len ? c0 + TC : len;
      for (long r = r0; r < r1; r++) {
        const int32_t* xr = x + base[r - r0];
        int32_t* o = out + r * len;
        for (long c = c0; c < c1; c++) o[c] = xr[c * s];
      }
    }
  }
}

/* transpose(heap, xOff, outOff, desc: Int32Array [rank, out shape…, input strides…]) for 4-byte elements. */
static napi_value js_transpose(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "transpose")) return NULL;
  size_t bytes, db;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  int32_t* desc = (int32_t*)heap_of(env, argv[3], &db);
  if (desc == NULL) return NULL;
  transpose_job j = {.heap = heap, .x_off = (long)num(env, argv[1]), .out_off = (long)num(env, argv[2]), .rank = db >= 4 ? desc[0] : 0};
  if (j.rank < 1 || j.rank > MAX_DIMS || db < sizeof(int32_t) * (size_t)(1 + 2 * j.rank)) {
    napi_throw_range_error(env, NULL, "r1kernels.transpose: bad descriptor");
    return NULL;
  }
  long n = 1, last = 0; /* last: the largest input element offset read */
  for (int d = 0; d < j.rank; d++) {
    j.shape[d] = desc[1 + d];
    j.stride[d] = desc[1 + j.rank + d];
    if (j.shape[d] < 1 || j.stride[d] < 0) {
      napi_throw_range_error(env, NULL, "r1kernels.transpose: bad sizes");
      return NULL;
    }
    n *= j.shape[d];
    last += (j.shape[d] - 1) * j.stride[d];
  }
  if (!in_heap(env, j.x_off, 4 * (last + 1), bytes, "transpose") || !in_heap(env, j.out_off, 4 * n, bytes, "transpose")) return NULL;
  j.len = j.shape[j.rank - 1];
  j.rows = n / j.len;
  int parts = n >= (1L << 16) && nthreads > 1 ? 4 * nthreads : 1;
  parallel(transpose_task, &j, parts);
  return NULL;
}

napi_status r1_init_layout(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"transpose", NULL, js_transpose, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
