// Error checking for CUDA runtime, cuBLAS and kernel launches.
//
// Every CUDA call in this project goes through one of these macros. A failure throws
// dspark::cuda::cuda_error (a std::runtime_error) whose message names the failing call, the
// error string, and file:line, so the service boundary can report it; library code never exits.
// Kernel launches are followed by DSPARK_CUDA_CHECK_LAUNCH(), which catches bad launch
// configurations at once (asynchronous faults surface at the next synchronising call).
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace dspark::cuda {

struct cuda_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* call, const char* file,
                                          int line) {
  throw cuda_error(std::string(call) + " failed: " + cudaGetErrorName(e) + " (" +
                   cudaGetErrorString(e) + ") at " + file + ":" + std::to_string(line));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* call, const char* file,
                                            int line) {
  throw cuda_error(std::string(call) + " failed: cuBLAS status " + std::to_string(static_cast<int>(s)) +
                   " at " + file + ":" + std::to_string(line));
}

// True when at least one CUDA device is usable. Never throws: a missing driver counts as none.
// Clears the sticky "no device" error so later calls start clean.
inline bool device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

}  // namespace dspark::cuda

#define DSPARK_CUDA_CHECK(call)                                                  \
  do {                                                                           \
    const cudaError_t dspark_err_ = (call);                                      \
    if (dspark_err_ != cudaSuccess)                                              \
      ::dspark::cuda::throw_cuda_error(dspark_err_, #call, __FILE__, __LINE__);  \
  } while (0)

// After a <<<...>>> launch: reports invalid configurations and earlier asynchronous faults.
#define DSPARK_CUDA_CHECK_LAUNCH() DSPARK_CUDA_CHECK(cudaGetLastError())

#define DSPARK_CUBLAS_CHECK(call)                                                  \
  do {                                                                             \
    const cublasStatus_t dspark_st_ = (call);                                      \
    if (dspark_st_ != CUBLAS_STATUS_SUCCESS)                                       \
      ::dspark::cuda::throw_cublas_error(dspark_st_, #call, __FILE__, __LINE__);   \
  } while (0)

// Argument validation at launcher entry: throws std::invalid_argument with the condition text.
#define DSPARK_CUDA_REQUIRE(cond, msg)                                                      \
  do {                                                                                      \
    if (!(cond))                                                                            \
      throw std::invalid_argument(std::string(msg) + " (" #cond ") at " + __FILE__ + ":" + \
                                  std::to_string(__LINE__));                                \
  } while (0)
