/*
 * Attention of one new token per sequence (decoding), fused: for each row b and query head (kv head h,
 * group g), over the Sp keys of the prompt the row continues (shared by the rows of that prompt) and then
 * the row's own S keys,
 *
 *   o = Σ_s softmax(q·k_s + bias_s) v_s
 *
 * in one pass per (row, kv head), instead of the ~25 small tfjs kernels (gathers, transposes, batched
 * products, softmax, slices) the composite runs per layer and token.
 */
#include "common.h"

typedef struct {
  char* heap;
  long q_off, pk_off, pv_off, pof_off, pbias_off, k_off, v_off, mask_off, out_off;
  int B, H, G, D, P, Sp, S, cap; /* cap: slots per (row, head) in k / v, S of them attended */
} decode_job;

MULTI static void axpy(float w, const float* restrict x, float* restrict y, int n) {
  for (int i = 0; i < n; i++) y[i] += w * x[i];
}

static void decode_task(void* ctx, int index, int count) {
  decode_job* j = ctx;
  long pairs = (long)j->B * j->H;
  long per = (pairs + count - 1) / count;
  long i0 = index * per, i1 = i0 + per < pairs ? i0 + per : pairs;
  float* scratch = thread_scratch((size_t)j->Sp + j->S);
  if (scratch == NULL) return;
  const int D = j->D, Sp = j->Sp, S = j->S, G = j->G;
  const int32_t* prompt_of = (const int32_t*)(j->heap + j->pof_off);
  for (long pair = i0; pair < i1; pair++) {
    int b = (int)(pair / j->H), h = (int)(pair % j->H);
    int p = prompt_of[b];
    const float* pk = (const float*)(j->heap + j->pk_off) + (((long)p * j->H + h) * Sp) * D;
    const float* pv = (const float*)(j->heap + j->pv_off) + (((long)p * j->H + h) * Sp) * D;
    const float* pbias = (const float*)(j->heap + j->pbias_off) + (long)b * Sp;
    const float* k = (const float*)(j->heap + j->k_off) + (((long)b * j->H + h) * j->cap) * D;
    const float* v = (const float*)(j->heap + j->v_off) + (((long)b * j->H + h) * j->cap) * D;
    for (int g = 0; g < G; g++) {
      const float* q = (const float*)(j->heap + j->q_off) + (((long)b * j->H + h) * G + g) * D;
      const float* mask = (const float*)(j->heap + j->mask_off) + ((long)b * G + g) * S;
      float* out = (float*)(j->heap + j->out_off) + (((long)b * j->H + h) * G + g) * D;
      float mx = -INFINITY;
      for (int s = 0; s < Sp; s++) {
        float x = dot16(q, pk + (long)s * D, D) + pbias[s];
        scratch[s] = x;
        if (x > mx) mx = x;
      }
      for (int s = 0; s < S; s++) {
        float x = dot16(q, k + (long)s * D, D) + mask[s];
        scratch[Sp + s] = x;
        if (x > mx) mx = x;
      }
      float total = 0;
      for (int s = 0; s < Sp + S; s++) total += scratch[s] = expf(scratch[s] - mx);
      float inv = 1.0f / total;
      memset(out, 0, sizeof(float) * D);
      for (int s = 0; s < Sp; s++) axpy(scratch[s] * inv, pv + (long)s * D, out, D);
      for (int s = 0; s < S; s++) axpy(scratch[Sp + s] * inv, v + (long)s * D, out, D);
    }
  }
}

/* decode(heap, offsets: Float64Array [q, pk, pv, promptOf, promptBias, k, v, mask, out], dims: Int32Array [B, Hkv, G, hd, P, Sp, S, cap]);
 * k and v hold `cap` ≥ S slots per (row, head), the first S attended (a preallocated generation cache). */
static napi_value js_decode(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, "decode")) return NULL;
  size_t bytes, ob, db;
  char* heap = heap_of(env, argv[0], &bytes);
  if (heap == NULL) return NULL;
  double* o = (double*)heap_of(env, argv[1], &ob);
  if (o == NULL) return NULL;
  int32_t* d = (int32_t*)heap_of(env, argv[2], &db);
  if (d == NULL) return NULL;
  if (ob < 9 * sizeof(double) || db < 8 * sizeof(int32_t)) {
    napi_throw_range_error(env, NULL, "r1kernels.decode: expected 9 offsets and 8 sizes");
    return NULL;
  }
  decode_job j = {.heap = heap, .q_off = (long)o[0], .pk_off = (long)o[1], .pv_off = (long)o[2], .pof_off = (long)o[3], .pbias_off = (long)o[4],
                  .k_off = (long)o[5], .v_off = (long)o[6], .mask_off = (long)o[7], .out_off = (long)o[8],
                  .B = d[0], .H = d[1], .G = d[2], .D = d[3], .P = d[4], .Sp = d[5], .S = d[6], .cap = d[7]};
  long B = j.B, H = j.H, G = j.G, D = j.D, P = j.P, Sp = j.Sp, S = j.S, cap = j.cap;
  if (B < 0 || H <= 0 || G <= 0 || D <= 0 || P <= 0 || Sp < 0 || S < 0 || cap < S) {
    napi_throw_range_error(env, NULL, "r1kernels.decode: bad sizes");
    return NULL;
  }
  if (!in_heap(env, j.q_off, 4 * B * H * G * D, bytes, "decode") || !in_heap(env, j.pk_off, 4 * P * H * Sp * D, bytes, "decode") ||
      !in_heap(env, j.pv_off, 4 * P * H * Sp * D, bytes, "decode") || !in_heap(env, j.pof_off, 4 * B, bytes, "decode") ||
      !in_heap(env, j.pbias_off, 4 * B * Sp, bytes, "decode") || !in_heap(env, j.k_off, 4 * B * H * cap * D, bytes, "decode") ||
      !in_heap(env, j.v_off, 4 * B * H * cap * D, bytes, "decode") || !in_heap(env, j.mask_off, 4 * B * G * S, bytes, "decode") ||
      !in_heap(env, j.out_off, 4 * B * H * G * D, bytes, "decode")) return NULL;
  const int32_t* prompt_of = (const int32_t*)(heap + j.pof_off);
  for (long b = 0; b < B; b++) {
    if (prompt_of[b] < 0 || prompt_of[b] >= P) {
      napi_throw_range_error(env, NULL, "r1kernels.decode: a row's prompt index is out of range");
      return NULL;
    }
  }
  long work = B * H * G * (Sp + S) * D;
  int parts = work >= (1L << 15) && nthreads > 1 ? (int)(B * H < 4L * nthreads ? B * H : 4L * nthreads) : 1;
  parallel(decode_task, &j, parts);
  return NULL;
}

napi_status r1_init_decode(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"decode", NULL, js_decode, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
