/*
 * Row maxima: out[r] = max_j x[r, j] for float32 x [rows, dim], the reduction inside logSoftmax. In the order
 * of tfjs's cpu kernel, so bitwise its result: a strict > from the row's first element (the first of equal
 * values wins, which decides the sign of a zero maximum), and NaN when the row holds one.
 */
#include "common.h"

typedef struct {
  char* heap;
  long x_off, out_off, rows, dim;
} max_job;

static void max_task(void* ctx, int index, int count) {
  const max_job* j = ctx;
  long per = (j->rows + count - 1) / count, r0 = index * per, r1 = r0 + per < j->rows ? r0 + per : j->rows;
  const float* x = (const float*)(j->heap + j->x_off);
  float* out = (float*)(j->heap + j->out_off);
  for (long r = r0; r < r1; r++) {
    const float* row = x + r * j->dim;
    float m = row[0];
    int nan = 0;
    for (long i = 0; i < j->dim; i++) {
      nan |= row[i] != row[i];
      if (row[i] > m) m = row[i];
    }
    out[r] = nan ? NAN : m;
  }
}

/* rowMax(heap, xOff, rows, dim, outOff) */
static napi_value js_row_max(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv, "rowMax")) return NULL;
  size_t bytes;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  max_job j = {.heap = heap, .x_off = (long)num(env, argv[1]), .rows = (long)num(env, argv[2]), .dim = (long)num(env, argv[3]), .out_off = (long)num(env, argv[4])};
  if (j.rows < 0 || j.dim < 1 || !in_heap(env, j.x_off, 4 * j.rows * j.dim, bytes, "rowMax") || !in_heap(env, j.out_off, 4 * j.rows, bytes, "rowMax")) return NULL;
  long work = j.rows * j.dim;
  int parts = work >= (1L << 16) && nthreads > 1 ? (int)(j.rows < 4L * nthreads ? j.rows : 4L * nthreads) : 1;
  parallel(max_task, &j, parts > 0 ? parts : 1);
  return NULL;
}

napi_status r1_init_reduce(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"rowMax", NULL, js_row_max, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
