{
  "targets": [
    {
      "target_name": "r1kernels",
      "sources": ["native/r1kernels.c", "native/attention.c", "native/fused.c", "native/optim.c", "native/decode.c", "native/layout.c", "native/reduce.c"],
      "cflags": ["-O3", "-std=gnu11", "-fno-math-errno", "-Wno-psabi"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
