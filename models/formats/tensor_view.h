// A named, typed, read-only view of a tensor inside a memory-mapped weight file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/formats/dtype.h"

namespace dspark {

struct tensor_view {
  std::string name;
  dtype type = dtype::f32;
  // Row-major, outermost dimension first (PyTorch order): a linear layer's weight is
  // [n_out, n_in] and each of its n_out rows holds n_in contiguous elements.
  // (GGUF stores ne[] innermost first; the GGUF reader reverses it.)
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the file mapping; valid while the file object lives
  size_t n_bytes = 0;

  int64_t n_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t row_length() const { return shape.empty() ? 1 : shape.back(); }
  int64_t n_rows() const { return row_length() == 0 ? 0 : n_elements() / row_length(); }
  size_t row_bytes() const { return bytes_for(type, row_length()); }
  // Recomputes row_bytes() (a checked division) on every call: loops over many rows take
  // row_bytes() once and use row(i, stride) (the q8 kernels do; per row it was 3.5% of a
  // SmolLM2 decode step).
  const uint8_t* row(int64_t i) const { return row(i, row_bytes()); }
  const uint8_t* row(int64_t i, size_t stride) const { return data + static_cast<size_t>(i) * stride; }
};

}  // namespace dspark
