/*
 * What the kernel files of r1kernels share: the thread pool, the single-product GEMM, SIMD vector types,
 * the vector exp, and the N-API argument helpers. Every kernel reads and writes the wasm heap in place at
 * byte offsets the JavaScript side passes.
 */
#ifndef R1KERNELS_COMMON_H
#define R1KERNELS_COMMON_H
#define _GNU_SOURCE
#include <node_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include <limits.h>
#include <unistd.h>

/* Functions compiled for AVX-512, AVX2+FMA and plain x86-64, picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTI __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MULTI
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi16 __attribute__((vector_size(64), aligned(4)));
/* Lane-wise m ? a : b for a comparison mask m (all ones / all zeros per lane). */
#define SEL(m, a, b) ((v16)(((m) & (vi16)(a)) | (~(m) & (vi16)(b))))

/* The first n ≤ 16 floats at p as a vector (the rest zero), and back. */
static inline __attribute__((always_inline)) v16 load16(const float* p, int n) {
  v16 x = (v16){0};
  if (n == 16) memcpy(&x, p, sizeof x);
  else memcpy(&x, p, sizeof(float) * n);
  return x;
}
static inline __attribute__((always_inline)) void store16(float* p, v16 x, int n) {
  if (n == 16) memcpy(p, &x, sizeof x);
  else memcpy(p, &x, sizeof(float) * n);
}

/* Σ a_i b_i, 16 lanes at a time (a plain loop is not vectorised: float sums do not reassociate). */
float dot16(const float* a, const float* b, int n);
/* This thread's scratch of at least n floats (64-byte aligned, grown on demand, kept); NULL when out of memory. */
float* thread_scratch(size_t n);

#define MAX_THREADS 8
typedef void (*task_fn)(void* ctx, int index, int count);
/* Threads in the pool, the calling one included. */
extern int nthreads;
/* Runs task(ctx, i, count) for i < count over the pool; returns when all are done. */
void parallel(task_fn task, void* ctx, int count);

/* C[m, n] (ldc) = op(A)[m, k] · op(B)[k, n], row-major with leading dims; `own` forces the addon's GEMM
 * (call it with own = 1 from inside a parallel task: OpenBLAS serialises concurrent callers). */
void gemm1(int ta, int tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc, int own);
/* out[i] = exp(in[i]), ≤ 2 ulp; 0 below −87.34, +inf above 88.72, NaN kept. */
void exp_block(const float* in, float* out, long n);

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "r1kernels: N-API call failed: " #call); return NULL; } } while (0)
/* The base of absolute-address mode: a heap argument of null means offsets are addresses less ABS_BASE (see
 * `address`). Not 0, so that NULL keeps meaning "an error was thrown"; no mapping lies below it (the first
 * page is never mapped), so every address − ABS_BASE is ≥ 0. */
#define ABS_BASE ((char*)4096)
/* The bytes of a typed-array view of the wasm heap (NULL, with a JS error thrown, when not one); for null,
 * ABS_BASE and no bound (the JavaScript side checks each operand against its typed array). */
char* heap_of(napi_env env, napi_value v, size_t* bytes);
/* A number argument (booleans read as 0 / 1). */
double num(napi_env env, napi_value v);
/* Exactly `want` arguments into argv, else a TypeError naming `name` and 0. */
int get_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv, const char* name);
/* Whether [off, off + bytes) lies in the heap, else a RangeError naming `name` and 0. */
int in_heap(napi_env env, long off, long bytes, size_t heap_bytes, const char* name);

/* Each kernel file adds its functions to the addon's exports. */
napi_status r1_init_attention(napi_env env, napi_value exports);
napi_status r1_init_fused(napi_env env, napi_value exports);
napi_status r1_init_optim(napi_env env, napi_value exports);
napi_status r1_init_decode(napi_env env, napi_value exports);
napi_status r1_init_layout(napi_env env, napi_value exports);
napi_status r1_init_reduce(napi_env env, napi_value exports);
#endif
