// Programmatic dependent launch (PDL), host side: which launches ask for it.
//
// A decode step is ~400 small kernels in a row; between two of them the GPU drains the first
// grid, then launches and ramps up the second (a few microseconds each, about 1 ms per step on
// an 8B model). With PDL (Hopper), a kernel launched with the programmatic-serialization
// attribute may start while its predecessor is finishing; it must execute griddepcontrol.wait
// (pdl_wait() in pdl.cuh) before touching anything the predecessor writes, and may do
// independent work before that: the GEMV prefetches its weights into L2.
//
// The choice is per thread and scoped: the runner enables it around its enqueue (and so in
// its CUDA graphs); every other caller gets plain launches. Kernels launched through
// launch_kernel() (pdl.cuh) read it.
#pragma once

namespace dspark::cuda {

inline thread_local bool t_pdl_enabled = false;

inline bool pdl_enabled() { return t_pdl_enabled; }

class pdl_scope {
 public:
  explicit pdl_scope(bool on) : prev_(t_pdl_enabled) { t_pdl_enabled = on; }
  ~pdl_scope() { t_pdl_enabled = prev_; }
  pdl_scope(const pdl_scope&) = delete;
  pdl_scope& operator=(const pdl_scope&) = delete;

 private:
  bool prev_;
};

}  // namespace dspark::cuda
