// Int8-activation matmul kernels (placeholder: no dtype uses this path yet).
#include "kernels/cpu/matmul_internal.h"

namespace dspark::cpu {

bool has_q8_kernel(dtype) { return false; }

void quantize_activations(const float*, int64_t, int64_t, int64_t, const matmul_ws&) {}

void matmul_q8_rows(const tensor_view&, const matmul_ws&, int64_t, float*, int64_t, int64_t) {}

}  // namespace dspark::cpu
