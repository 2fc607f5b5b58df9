#include "engine/model/auto_dtype.h"

#include <memory>

#include "common/status_macros.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"

namespace tandem {

absl::StatusOr<DType> CheckpointDtype(const std::filesystem::path& dir) {
  // config.json first, so a wrong directory gets the loader's own error.
  RETURN_IF_ERROR(LoadModelConfig(dir).status());
  // Opening maps the files and parses their headers only; no weight is read.
  ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(dir));
  ASSIGN_OR_RETURN(TensorView embed, store->Find("model.embed_tokens.weight"));
  return embed.dtype;
}

kernels::MatMulPrecision AutoMatMulPrecision(DType checkpoint_dtype, bool bf16_matmul_is_fast) {
  return checkpoint_dtype == DType::kBF16 && bf16_matmul_is_fast ? kernels::MatMulPrecision::kBf16
                                                                 : kernels::MatMulPrecision::kF32;
}

DType AutoKvCacheDtype(DType checkpoint_dtype) {
  return checkpoint_dtype == DType::kBF16 || checkpoint_dtype == DType::kF16 ? checkpoint_dtype : DType::kF32;
}

std::string MatMulPrecisionName(kernels::MatMulPrecision p) {
  return p == kernels::MatMulPrecision::kBf16 ? "bfloat16" : "float32";
}

}  // namespace tandem
