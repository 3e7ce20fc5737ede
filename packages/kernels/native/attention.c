#include "common.h"

napi_status r1_init_attention(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
  return napi_ok;
}
