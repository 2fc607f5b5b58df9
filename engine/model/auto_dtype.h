// `--dtype auto` and `--kv-cache-dtype auto`: the arithmetic and KV storage a
// user who passes no flags gets, chosen from the checkpoint and the host.
//
//   checkpoint dtype  the dtype of the embedding table (never quantized, so a
//                     quantized checkpoint reports the dtype its activations
//                     were trained in).
//   --dtype auto      bfloat16 when the checkpoint is BF16 and BF16 matmuls
//                     run faster than fp32 ones on this host
//                     (kernels::Bf16MatMulIsFast: AMX tiles, or AVX512_BF16
//                     cores whose vdpbf16ps outruns their fp32 fma; after any
//                     TANDEM_CPU_ISA cap): the weights are BF16 already, so
//                     rounding the activations is the only change. float32
//                     otherwise: F32/F16 weights would lose mantissa bits, and
//                     where vdpbf16ps is slow (Sapphire/Emerald Rapids without
//                     AMX run it at half their fma rate) or absent, rounding
//                     would only cost time.
//   --kv-cache-dtype auto  the checkpoint's dtype when it is BF16 or F16 (as
//                     vLLM's "auto": the model's dtype), else fp32. It
//                     depends only on the file, never on the host, so every
//                     worker of a cluster picks the same KV layout.
// Thread-safety: pure functions (the ISA is detected once, thread-safely).
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"

namespace tandem {

// The dtype of `dir`'s model.embed_tokens.weight. Errors: WeightStore::Open's,
// NotFound when the checkpoint has no embedding table.
absl::StatusOr<DType> CheckpointDtype(const std::filesystem::path& dir);

// `bf16_matmul_is_fast`: kernels::Bf16MatMulIsFast() (a parameter for tests).
kernels::MatMulPrecision AutoMatMulPrecision(DType checkpoint_dtype, bool bf16_matmul_is_fast);
DType AutoKvCacheDtype(DType checkpoint_dtype);

// "float32" | "bfloat16": the --dtype spelling of `p`.
std::string MatMulPrecisionName(kernels::MatMulPrecision p);

}  // namespace tandem
