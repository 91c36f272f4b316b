// Element types of weight tensors, with ggml's numeric ids so a GGUF type id maps 1:1.
//
// Quantized types are stored in blocks: `block_size` elements packed into `type_size` bytes.
// Unquantized types have block_size 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace dspark {

// Values are ggml's `ggml_type` ids; never renumber, only append.
enum class dtype : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q8_0 = 8,
  q4_k = 12,
  q6_k = 14,
  bf16 = 30,
};

struct dtype_traits {
  std::string_view name;  // "f32", "q4_1", ...
  int64_t block_size;     // elements per block
  int64_t type_size;      // bytes per block
};

// Traits of a supported type; nullopt for a ggml id this engine does not support.
std::optional<dtype_traits> dtype_traits_of(uint32_t ggml_type_id);
const dtype_traits& traits(dtype t);

// Bytes taken by `n_elements` contiguous elements; n_elements must be a multiple of block_size.
size_t bytes_for(dtype t, int64_t n_elements);

// Decodes `n` elements (a multiple of the block size) starting at `src` into float32 `dst`.
void dequantize_row(dtype t, const void* src, float* dst, int64_t n);

}  // namespace dspark
