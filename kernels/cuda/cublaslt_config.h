// A cuBLASLt algorithm's configuration as plain values, and the variants an algorithm offers:
// the one description that the GEMM context's variant timing (gemm.cu, DSPARK_GEMM_VARIANTS)
// and bench/bench_gemm_algos share, so both try the same configurations by the same rules.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dspark::cuda {

// The enum values cublasLt.h names (CUBLASLT_MATMUL_TILE_*, CUBLASLT_MATMUL_STAGES_*, ...).
struct cublaslt_config {
  int32_t id = -1;
  uint32_t tile = 0, stages = 0;
  int32_t splitk = 1;
  uint32_t reduction = 0;
  uint32_t swizzle = 0;
  uint16_t cluster = 0;
  bool operator==(const cublaslt_config&) const = default;
  std::string str() const;  // "algo 12 tile 23 stages 8 splitK 2 reduction 2 swizzle 0 cluster 0"
};

cublaslt_config config_of(const cublasLtMatmulAlgo_t& a);

// The tiles and stage counts the algorithm offers (its CUBLASLT_ALGO_CAP_* lists); empty when
// it lists none.
std::vector<uint32_t> tile_ids(const cublasLtMatmulAlgo_t& a);
std::vector<uint32_t> stage_ids(const cublasLtMatmulAlgo_t& a);

// Whether the algorithm splits K with the partial sums reduced in float32 (the compute type).
// The only split-K either user tries: an in-place reduction adds the partial sums in the output
// type, bf16 for most of a model's GEMMs.
bool splits_in_float32(const cublasLtMatmulAlgo_t& a);

// `a` with this tile, stage count and split-K (split > 1 reduces in the compute type, so only
// for an algorithm where splits_in_float32 holds). cublasLtMatmulAlgoCheck says whether a shape
// accepts the result.
cublasLtMatmulAlgo_t with_config(cublasLtMatmulAlgo_t a, uint32_t tile, uint32_t stages, int32_t split);

}  // namespace dspark::cuda
