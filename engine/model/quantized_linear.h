// Loads one linear layer of a pre-quantized checkpoint (see
// checkpoint_quantization.h for the formats) as a tensor-parallel shard's
// slice, decoded into the kernels' own quantized layout in owned memory.
//
// Every tensor is checked (presence, dtype, shape, value ranges) and errors
// name the tensor. The shard slices the way the float loader does: a
// column-parallel layer takes a range of output rows, a row-parallel one a
// range of input columns (per-row scales apply to any column slice).
// Thread-safety: none needed; called once per layer at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/fp8_matmul.h"
#include "engine/kernels/int4_matmul.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/checkpoint_quantization.h"
#include "engine/model/safetensors.h"
#include "engine/model/tp_shard.h"

namespace tandem {

// Which part of the full [out, in] matrix a shard holds.
struct LinearSlice {
  enum Axis : uint8_t { kRows, kColumns } axis = kRows;
  ShardRange range;  // of rows (kRows) or columns (kColumns)
};

// The quantized matrices a model owns (the WeightRefs point into them).
struct QuantizedStorage {
  std::vector<std::unique_ptr<kernels::Int8Weight>> int8;
  std::vector<std::unique_ptr<kernels::Fp8Weight>> fp8;
  std::vector<std::unique_ptr<kernels::Int4Weight>> int4;
  std::vector<std::unique_ptr<std::vector<int32_t>>> input_perms;  // WeightRef::input_perm
};

// Loads module `module` (e.g. "model.layers.3.mlp.down_proj"; its tensors
// are `module` + ".weight", ".weight_scale", ...) of full shape [out, in],
// stored as `q` says, into `storage`; returns the slice's WeightRef (its
// quantized pointer set, no float data). InvalidArgument / NotFound name
// the tensor. A row-parallel (column) slice of a 4-bit layer must start and
// end on group boundaries, and cannot be taken of a GPTQ act-order layer
// (its groups gather columns from everywhere); such a layer loads with its
// columns sorted by group and WeightRef::input_perm set.
absl::StatusOr<kernels::WeightRef> LoadQuantizedLinear(const WeightStore& store, const CheckpointQuantization& q,
                                                       const std::string& module, int64_t out, int64_t in,
                                                       const LinearSlice& slice, QuantizedStorage& storage);

}  // namespace tandem
