// Backend choice for the dspark commands. All CUDA code sits under DSPARK_HAVE_CUDA (defined
// by the dspark_cuda target, which dspark links only when CUDA was built), so a CPU-only build
// compiles and links this file with no CUDA headers or libraries.
#include "services/dspark/backend_factory.h"

#include <cstdio>
#include <optional>
#include <stdexcept>

#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

#ifdef DSPARK_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#endif

namespace dspark::cli {

option_spec device_option_spec() {
  return {"device", true, false, "cpu|cuda  where to run (default: cuda if built with it and a GPU is present)"};
}

bool cuda_available() {
#ifdef DSPARK_HAVE_CUDA
  return cuda::device_available();
#else
  return false;
#endif
}

device_kind read_device(const parsed_args& a, std::string_view command) {
  const std::optional<std::string> v = a.get("device");
  device_kind d;
  if (!v) {
    d = cuda_available() ? device_kind::cuda : device_kind::cpu;
  } else if (*v == "cpu") {
    d = device_kind::cpu;
  } else if (*v == "cuda") {
#ifndef DSPARK_HAVE_CUDA
    throw std::runtime_error("--device cuda: this dspark was built without CUDA (no CUDA toolkit at build time); "
                             "use --device cpu");
#else
    if (!cuda_available())
      throw std::runtime_error("--device cuda: no CUDA device found (cudaGetDeviceCount reports none, or no "
                               "driver); use --device cpu");
#endif
    d = device_kind::cuda;
  } else {
    throw usage_error("--device must be cpu or cuda, got '" + *v + "'");
  }
  if (d == device_kind::cuda && (a.has("threads") || a.has("precision")))
    std::fprintf(stderr, "dspark %.*s: note: --threads and --precision apply to --device cpu only; ignored\n",
                 static_cast<int>(command.size()), command.data());
  return d;
}

std::unique_ptr<backend> make_backend(const backend_choice& ch, const model_config& c, const llama_weights& w) {
  if (ch.device == device_kind::cuda) {
#ifdef DSPARK_HAVE_CUDA
    cuda::cuda_backend_options o;
    o.n_seq_max = ch.cpu.n_seq_max;
    o.n_ctx = ch.cpu.n_ctx;
    o.kv_memory_fraction = ch.kv_memory_fraction;
    return std::make_unique<cuda::cuda_backend>(c, w, o);
#else
    // read_device() never returns cuda here; this guards a hand-built choice.
    throw std::runtime_error("this dspark was built without CUDA; use --device cpu");
#endif
  }
  return std::make_unique<cpu_backend>(c, w, ch.cpu);
}

int cpu_threads(const backend_choice& ch) {
  if (ch.device == device_kind::cuda) return 0;
  return ch.cpu.n_threads > 0 ? ch.cpu.n_threads : default_thread_count();  // as cpu_backend does
}

std::string describe(const backend_choice& ch) {
  if (ch.device == device_kind::cuda) {
#ifdef DSPARK_HAVE_CUDA
    return cuda::profile_tag();
#else
    return "cuda";
#endif
  }
  const char* precision = ch.cpu.precision == matmul_precision::f32_activations ? "f32" : "q8";
  return "cpu, " + std::to_string(cpu_threads(ch)) + " threads, " + precision;
}

std::string_view device_name(device_kind d) { return d == device_kind::cuda ? "cuda" : "cpu"; }

}  // namespace dspark::cli
