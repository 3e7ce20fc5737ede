/*
 * Fused causal attention, forward and backward, on the wasm heap in place.
 *
 *   O = softmax(Q Kᵀ + M) V,  per (batch, kv head): Q [G·T, hd] (row g·T + t), K, V [S, hd], S = past + T
 *
 * Row t of every group sees keys s ≤ past + t; the keys after that are never read (M must hide them: it is
 * the caller's causal mask, which may also carry padding). Rows go in blocks of up to RB rows of one group;
 * a block multiplies only the keys its last row can see, so the masked half of Q Kᵀ is mostly skipped.
 *
 * Forward saves each row's log-sum-exp L = log Σ exp(Q Kᵀ + M) instead of the probabilities (flash-attention
 * style): the backward recomputes P = exp(Q Kᵀ + M − L) per block, one more product, and nothing of size
 * [G·T, S] stays alive between the passes. Backward, with D = rowsum(dO ∘ O):
 *   dS = P ∘ (dO Vᵀ − D),  dQ = dS K,  dK = dSᵀ Q,  dV = Pᵀ dO
 * The forward splits over (pair, group, row block); the backward over pairs, as each pair's dK, dV sum over
 * all its row blocks. Products run on gemm1 (the addon's GEMM, per thread), the row passes on 16-lane SIMD.
 */
#include "common.h"

/* Rows per block: small enough that the skipped triangle is most of the masked part, large enough for GEMM. */
#define RB 64

typedef struct {
  char* heap;
  int B, H, G, T, past, hd, S, nblk;
  long q, k, v, m, o, lse, dy, dq, dk, dv; /* byte offsets */
  long msb, msh;                          /* mask element strides over batch and kv head (0: broadcast) */
} att_job;

/* x[0, n) += m, then x = exp(x − max) / Σ, x[n, w) = 0; returns the log-sum-exp of x + m over [0, n). */
MULTI static float softmax_row(float* x, const float* m, int n, int w) {
  v16 mx = (v16){0} - __builtin_inff();
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    v16 a = load16(x + j, l) + load16(m + j, l);
    if (l < 16) for (int i = l; i < 16; i++) a[i] = -__builtin_inff();
    store16(x + j, a, l);
    mx = SEL((vi16)(a > mx), a, mx);
  }
  float top = -__builtin_inff();
  for (int i = 0; i < 16; i++) top = mx[i] > top ? mx[i] : top;
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    store16(x + j, load16(x + j, l) - top, l);
  }
  exp_block(x, x, n);
  v16 acc = (v16){0};
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    acc += load16(x + j, l);
  }
  float sum = 0;
  for (int i = 0; i < 16; i++) sum += acc[i];
  float inv = 1.0f / sum;
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    store16(x + j, load16(x + j, l) * inv, l);
  }
  memset(x + n, 0, sizeof(float) * (w - n));
  return top + logf(sum);
}

/* P = exp(s + m − lse) into s and dS = P ∘ (dp − d) into dp over [0, n); both 0 over [n, w). */
MULTI static void grad_row(float* s, const float* m, float* dp, int n, int w, float lse, float d) {
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    store16(s + j, load16(s + j, l) + load16(m + j, l) - lse, l);
  }
  exp_block(s, s, n);
  for (int j = 0; j < n; j += 16) {
    int l = n - j < 16 ? n - j : 16;
    store16(dp + j, load16(s + j, l) * (load16(dp + j, l) - d), l);
  }
  memset(s + n, 0, sizeof(float) * (w - n));
  memset(dp + n, 0, sizeof(float) * (w - n));
}

MULTI static void add_to(float* restrict y, const float* restrict x, long n) {
  for (long i = 0; i < n; i++) y[i] += x[i];
}

#define F(off) ((float*)(j->heap + j->off))

/* Forward of one row block: task index = (pair · G + g) · nblk + block. */
static void fwd_task(void* ctx, int index, int count) {
  (void)count;
  const att_job* j = ctx;
  int blk = index % j->nblk, g = index / j->nblk % j->G, pair = index / j->nblk / j->G;
  int b = pair / j->H, h = pair % j->H, hd = j->hd, S = j->S;
  int t0 = blk * RB, t1 = t0 + RB < j->T ? t0 + RB : j->T, R = t1 - t0;
  int w = j->past + t1; /* keys the block's last row sees */
  long row0 = (long)pair * j->G * j->T + (long)g * j->T + t0; /* first row over all pairs */
  const float* q = F(q) + row0 * hd;
  const float* k = F(k) + (long)pair * S * hd;
  const float* v = F(v) + (long)pair * S * hd;
  const float* m = F(m) + b * j->msb + h * j->msh + ((long)g * j->T + t0) * S;
  float* o = F(o) + row0 * hd;
  float* lse = F(lse) + row0;
  float* s = thread_scratch((size_t)R * w);
  if (s == NULL) abort(); /* out of memory inside a pool task: nothing to throw to */
  gemm1(0, 1, R, w, hd, q, hd, k, hd, s, w, 1); /* [R, w] */
  for (int r = 0; r < R; r++) lse[r] = softmax_row(s + (long)r * w, m + (long)r * S, j->past + t0 + r + 1, w);
  gemm1(0, 0, R, hd, w, s, w, v, hd, o, hd, 1); /* [R, hd] */
}

/* Backward of one (batch, kv head) pair: all its row blocks, summing into its dK, dV. */
static void bwd_task(void* ctx, int pair, int count) {
  (void)count;
  const att_job* j = ctx;
  int b = pair / j->H, h = pair % j->H, hd = j->hd, S = j->S;
  const float* k = F(k) + (long)pair * S * hd;
  const float* v = F(v) + (long)pair * S * hd;
  float* dk = F(dk) + (long)pair * S * hd;
  float* dv = F(dv) + (long)pair * S * hd;
  memset(dk, 0, sizeof(float) * S * hd);
  memset(dv, 0, sizeof(float) * S * hd);
  float* s = thread_scratch((size_t)2 * RB * S + (size_t)S * hd);
  if (s == NULL) abort();
  float* dp = s + (size_t)RB * S;
  float* tmp = dp + (size_t)RB * S;
  for (int g = 0; g < j->G; g++) {
    for (int blk = 0; blk < j->nblk; blk++) {
      int t0 = blk * RB, t1 = t0 + RB < j->T ? t0 + RB : j->T, R = t1 - t0, w = j->past + t1;
      long row0 = (long)pair * j->G * j->T + (long)g * j->T + t0;
      const float* q = F(q) + row0 * hd;
      const float* o = F(o) + row0 * hd;
      const float* dy = F(dy) + row0 * hd;
      const float* lse = F(lse) + row0;
      const float* m = F(m) + b * j->msb + h * j->msh + ((long)g * j->T + t0) * S;
      float* dq = F(dq) + row0 * hd;
      gemm1(0, 1, R, w, hd, q, hd, k, hd, s, w, 1);   /* scores [R, w] */
      gemm1(0, 1, R, w, hd, dy, hd, v, hd, dp, w, 1); /* dP = dO Vᵀ [R, w] */
      for (int r = 0; r < R; r++) {
        grad_row(s + (long)r * w, m + (long)r * S, dp + (long)r * w, j->past + t0 + r + 1, w, lse[r], dot16(dy + (long)r * hd, o + (long)r * hd, hd));
      }
      gemm1(0, 0, R, hd, w, dp, w, k, hd, dq, hd, 1);  /* dQ = dS K [R, hd] */
      gemm1(1, 0, w, hd, R, dp, w, q, hd, tmp, hd, 1); /* dSᵀ Q [w, hd] */
      add_to(dk, tmp, (long)w * hd);
      gemm1(1, 0, w, hd, R, s, w, dy, hd, tmp, hd, 1); /* Pᵀ dO [w, hd] */
      add_to(dv, tmp, (long)w * hd);
    }
  }
}

/* The shape arguments shared by both directions: heap, B, H, G, T, past, hd, qOff, kOff, vOff, mOff,
 * mStrideB, mStrideH, oOff, lseOff (offsets in bytes, mask strides in elements). Returns 0 on a thrown error. */
static int read_job(napi_env env, napi_value* argv, att_job* j, size_t* bytes, const char* name) {
  j->heap = heap_of(env, argv[0], bytes);
  if (j->heap == NULL) return 0;
  j->B = (int)num(env, argv[1]), j->H = (int)num(env, argv[2]), j->G = (int)num(env, argv[3]);
  j->T = (int)num(env, argv[4]), j->past = (int)num(env, argv[5]), j->hd = (int)num(env, argv[6]);
  j->q = (long)num(env, argv[7]), j->k = (long)num(env, argv[8]), j->v = (long)num(env, argv[9]), j->m = (long)num(env, argv[10]);
  j->msb = (long)num(env, argv[11]), j->msh = (long)num(env, argv[12]);
  j->o = (long)num(env, argv[13]), j->lse = (long)num(env, argv[14]);
  if (j->B < 1 || j->H < 1 || j->G < 1 || j->T < 1 || j->past < 0 || j->hd < 1 || j->msb < 0 || j->msh < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "r1kernels.%s: bad sizes B=%d H=%d G=%d T=%d past=%d hd=%d", name, j->B, j->H, j->G, j->T, j->past, j->hd);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  j->S = j->past + j->T;
  j->nblk = (j->T + RB - 1) / RB;
  long rows = (long)j->B * j->H * j->G * j->T, keys = (long)j->B * j->H * j->S, mrows = (long)j->G * j->T * j->S;
  long mlast = (j->B - 1) * j->msb + (j->H - 1) * j->msh + mrows; /* one past the last mask element read */
  return in_heap(env, j->q, 4 * rows * j->hd, *bytes, name) && in_heap(env, j->k, 4 * keys * j->hd, *bytes, name) &&
         in_heap(env, j->v, 4 * keys * j->hd, *bytes, name) && in_heap(env, j->m, 4 * mlast, *bytes, name) &&
         in_heap(env, j->o, 4 * rows * j->hd, *bytes, name) && in_heap(env, j->lse, 4 * rows, *bytes, name);
}

/* attentionForward(heap, B, H, G, T, past, hd, qOff, kOff, vOff, mOff, mStrideB, mStrideH, oOff, lseOff) */
static napi_value js_attention_forward(napi_env env, napi_callback_info info) {
  napi_value argv[15];
  if (!get_args(env, info, 15, argv, "attentionForward")) return NULL;
  att_job j;
  size_t bytes;
  if (!read_job(env, argv, &j, &bytes, "attentionForward")) return NULL;
  parallel(fwd_task, &j, j.B * j.H * j.G * j.nblk);
  return NULL;
}

/* attentionBackward(…the forward's 15…, dyOff, dqOff, dkOff, dvOff): o and lse are the forward's outputs. */
static napi_value js_attention_backward(napi_env env, napi_callback_info info) {
  napi_value argv[19];
  if (!get_args(env, info, 19, argv, "attentionBackward")) return NULL;
  att_job j;
  size_t bytes;
  if (!read_job(env, argv, &j, &bytes, "attentionBackward")) return NULL;
  j.dy = (long)num(env, argv[15]), j.dq = (long)num(env, argv[16]), j.dk = (long)num(env, argv[17]), j.dv = (long)num(env, argv[18]);
  long rows = (long)j.B * j.H * j.G * j.T, keys = (long)j.B * j.H * j.S;
  if (!in_heap(env, j.dy, 4 * rows * j.hd, bytes, "attentionBackward") || !in_heap(env, j.dq, 4 * rows * j.hd, bytes, "attentionBackward") ||
      !in_heap(env, j.dk, 4 * keys * j.hd, bytes, "attentionBackward") || !in_heap(env, j.dv, 4 * keys * j.hd, bytes, "attentionBackward")) return NULL;
  parallel(bwd_task, &j, j.B * j.H);
  return NULL;
}

napi_status r1_init_attention(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"attentionForward", NULL, js_attention_forward, NULL, NULL, NULL, napi_default, NULL},
    {"attentionBackward", NULL, js_attention_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
