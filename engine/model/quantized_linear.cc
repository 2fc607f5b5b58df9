// LoadQuantizedLinear: each checkpoint format's tensors of one linear layer,
// read as their public descriptions lay them out.
#include "engine/model/quantized_linear.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

// The tensor `name` with one of `shapes`, in a float dtype (scales).
absl::StatusOr<TensorView> GetScale(const WeightStore& s, const std::string& name,
                                    const std::vector<std::vector<int64_t>>& shapes) {
  if (!s.Contains(name)) return absl::NotFoundError(absl::StrCat("tensor '", name, "' is missing"));
  absl::Status last;
  for (const std::vector<int64_t>& shape : shapes) {
    absl::StatusOr<TensorView> t = s.Get(name, shape);
    if (t.ok()) {
      if (!IsFloatDType(t->dtype)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is ", std::string(DTypeName(t->dtype)),
                                                       ": scales must be F32, F16 or BF16"));
      }
      return t;
    }
    last = t.status();
  }
  return last;
}

absl::StatusOr<TensorView> GetTyped(const WeightStore& s, const std::string& name, const std::vector<int64_t>& shape,
                                    DType dtype) {
  ASSIGN_OR_RETURN(TensorView t, s.Get(name, shape));
  if (t.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is ", std::string(DTypeName(t.dtype)),
                                                   ": expected ", std::string(DTypeName(dtype))));
  }
  return t;
}

// The `out` per-row scales of a per-channel ([out, 1] or [out]) or
// per-tensor ([1] or []) scale tensor, as fp32; each finite and >= 0.
absl::StatusOr<std::vector<float>> RowScales(const WeightStore& s, const CheckpointQuantization& q,
                                             const std::string& name, int64_t out) {
  const bool per_tensor = q.strategy == ScaleStrategy::kTensor;
  ASSIGN_OR_RETURN(TensorView t, per_tensor ? GetScale(s, name, {{1}, {}, {1, 1}}) : GetScale(s, name, {{out, 1}, {out}}));
  std::vector<float> v(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToFloat(t.dtype, t.data, t.num_elements(), v.data());
  for (float f : v) {
    if (!std::isfinite(f) || f < 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' holds ", f, ": scales must be finite and >= 0"));
    }
  }
  if (per_tensor) v.assign(static_cast<size_t>(out), v[0]);
  return v;
}

// A symmetric format may still store a zero point (older compressed-tensors
// writers did): accepted when it is all zeros.
absl::Status CheckZeroPointIsZero(const WeightStore& s, const std::string& name, int64_t out) {
  if (!s.Contains(name)) return absl::OkStatus();
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{out, 1}, {out}, {1}, {}}) {
    absl::StatusOr<TensorView> t = s.Get(name, shape);
    if (!t.ok()) continue;
    const int64_t n = t->num_elements();
    const auto* bytes = static_cast<const uint8_t*>(t->data);
    for (size_t i = 0; i < static_cast<size_t>(n) * DTypeSize(t->dtype); ++i) {
      // All-zero bytes: 0 in every integer dtype, +0.0 in every float one.
      if (bytes[i] != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "' is not all zeros: the checkpoint says its weights are symmetric"));
      }
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has an unexpected shape (want [", out, ", 1])"));
}

absl::StatusOr<kernels::WeightRef> LoadInt8(const WeightStore& s, const CheckpointQuantization& q,
                                            const std::string& module, int64_t out, int64_t in,
                                            const LinearSlice& slice, QuantizedStorage& storage) {
  ASSIGN_OR_RETURN(TensorView w, GetTyped(s, module + ".weight", {out, in}, DType::kI8));
  ASSIGN_OR_RETURN(std::vector<float> scales, RowScales(s, q, module + ".weight_scale", out));
  RETURN_IF_ERROR(CheckZeroPointIsZero(s, module + ".weight_zero_point", out));
  const auto* base = static_cast<const int8_t*>(w.data);
  kernels::WeightRef ref;
  ref.dtype = DType::kI8;
  if (slice.axis == LinearSlice::kRows) {
    storage.int8.push_back(std::make_unique<kernels::Int8Weight>(kernels::MakeInt8Weight(
        slice.range.length, in, base + slice.range.begin * in, in, scales.data() + slice.range.begin)));
    ref.rows = slice.range.length;
    ref.cols = in;
  } else {
    storage.int8.push_back(std::make_unique<kernels::Int8Weight>(
        kernels::MakeInt8Weight(out, slice.range.length, base + slice.range.begin, in, scales.data())));
    ref.rows = out;
    ref.cols = slice.range.length;
  }
  ref.row_stride = ref.cols;
  ref.int8 = storage.int8.back().get();
  return ref;
}

}  // namespace

absl::StatusOr<kernels::WeightRef> LoadQuantizedLinear(const WeightStore& store, const CheckpointQuantization& q,
                                                       const std::string& module, int64_t out, int64_t in,
                                                       const LinearSlice& slice, QuantizedStorage& storage) {
  switch (q.scheme) {
    case CheckpointScheme::kInt8:
      return LoadInt8(store, q, module, out, in, slice, storage);
    case CheckpointScheme::kNone:
      return absl::InvalidArgumentError(absl::StrCat(module, ": not a quantized checkpoint"));
    default:
      return absl::UnimplementedError(
          absl::StrCat(module, ": ", q.Describe(), " checkpoints cannot be loaded by this build yet"));
  }
}

}  // namespace tandem
