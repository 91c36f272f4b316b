// Helpers shared by the CUDA tests: skipping without a device, host<->device copies, random
// data, and the error measures the tests compare with.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "models/formats/fp16.h"

namespace dspark::cuda::test {

#define DSPARK_REQUIRE_CUDA_DEVICE()                                         \
  if (!::dspark::cuda::device_available()) GTEST_SKIP() << "no CUDA device"

template <typename T>
device_buffer upload(const std::vector<T>& v) {
  device_buffer b(v.size() * sizeof(T));
  if (!v.empty()) DSPARK_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), b.bytes(), cudaMemcpyHostToDevice));
  return b;
}

template <typename T>
std::vector<T> download(const device_buffer& b, size_t n) {
  std::vector<T> v(n);
  if (n > 0) DSPARK_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Fills a device buffer with NaN bit patterns (0xFF bytes are NaN in f32 and bf16), so an
// element a kernel forgot to write shows up as NaN.
inline void poison(const device_buffer& b) {
  DSPARK_CUDA_CHECK(cudaMemset(b.data(), 0xff, b.bytes()));
}

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = fp32_to_bf16(v[i]);
  return o;
}

inline std::vector<double> bf16_to_double(const std::vector<uint16_t>& v) {
  std::vector<double> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_fp32(v[i]);
  return o;
}

// Random bf16 values in [lo, hi), returned both as bits and as the exact doubles they encode
// (so the CPU reference sees exactly what the GPU sees).
struct bf16_data {
  std::vector<uint16_t> bits;
  std::vector<double> values;
};
inline bf16_data random_bf16(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  bf16_data d;
  d.bits = to_bf16(random_floats(rng, n, lo, hi));
  d.values = bf16_to_double(d.bits);
  return d;
}

// ||out - ref|| / ||ref|| over all elements; +inf if any output is NaN/inf.
template <typename T>
double rel_l2(const std::vector<T>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = static_cast<double>(out[i]);
    if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Largest |out - ref| / (atol + rtol * |ref|); <= 1 means every element is within tolerance.
// NaN in the output gives +inf.
template <typename T>
double max_scaled_err(const std::vector<T>& out, const std::vector<double>& ref, double atol,
                      double rtol, size_t* worst = nullptr) {
  double m = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = static_cast<double>(out[i]);
    const double e = std::isfinite(o) ? std::abs(o - ref[i]) / (atol + rtol * std::abs(ref[i]))
                                      : std::numeric_limits<double>::infinity();
    if (e > m) {
      m = e;
      if (worst) *worst = i;
    }
  }
  return m;
}

}  // namespace dspark::cuda::test
