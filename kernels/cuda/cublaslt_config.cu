// cuBLASLt configurations as values (see cublaslt_config.h). Host code only.
#include "kernels/cuda/cublaslt_config.h"

#include <cstdio>

namespace dspark::cuda {

namespace {

std::vector<uint32_t> cap_list(const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t attr) {
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&a, attr, nullptr, 0, &bytes) != CUBLAS_STATUS_SUCCESS || bytes == 0) return {};
  std::vector<uint32_t> v(bytes / sizeof(uint32_t));
  cublasLtMatmulAlgoCapGetAttribute(&a, attr, v.data(), bytes, &bytes);
  return v;
}

}  // namespace

std::string cublaslt_config::str() const {
  char b[128];
  std::snprintf(b, sizeof b, "algo %d tile %u stages %u splitK %d reduction %u swizzle %u cluster %u", id, tile, stages,
                splitk, reduction, swizzle, static_cast<unsigned>(cluster));
  return b;
}

cublaslt_config config_of(const cublasLtMatmulAlgo_t& a) {
  cublaslt_config c;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &c.id, sizeof c.id, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &c.tile, sizeof c.tile, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &c.stages, sizeof c.stages, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &c.splitk, sizeof c.splitk, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &c.reduction, sizeof c.reduction, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &c.swizzle, sizeof c.swizzle, &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &c.cluster, sizeof c.cluster, &w);
  return c;
}

std::vector<uint32_t> tile_ids(const cublasLtMatmulAlgo_t& a) { return cap_list(a, CUBLASLT_ALGO_CAP_TILE_IDS); }

std::vector<uint32_t> stage_ids(const cublasLtMatmulAlgo_t& a) { return cap_list(a, CUBLASLT_ALGO_CAP_STAGES_IDS); }

bool splits_in_float32(const cublasLtMatmulAlgo_t& a) {
  int32_t splitk_ok = 0;
  uint32_t schemes = 0;
  size_t w = 0;
  cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok, sizeof splitk_ok, &w);
  cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes, &w);
  return splitk_ok != 0 && (schemes & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) != 0;
}

cublasLtMatmulAlgo_t with_config(cublasLtMatmulAlgo_t a, uint32_t tile, uint32_t stages, int32_t split) {
  const uint32_t reduction = split > 1 ? uint32_t{CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}
                                       : uint32_t{CUBLASLT_REDUCTION_SCHEME_NONE};
  cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile);
  cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages);
  cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split);
  cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &reduction, sizeof reduction);
  return a;
}

}  // namespace dspark::cuda
