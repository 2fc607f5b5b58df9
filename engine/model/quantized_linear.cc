// LoadQuantizedLinear: each checkpoint format's tensors of one linear layer,
// read as their public descriptions lay them out.
#include "engine/model/quantized_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

absl::StatusOr<kernels::WeightRef> LoadFp8(const WeightStore& s, const CheckpointQuantization& q,
                                           const std::string& module, int64_t out, int64_t in,
                                           const LinearSlice& slice, QuantizedStorage& storage) {
  ASSIGN_OR_RETURN(TensorView w, GetTyped(s, module + ".weight", {out, in}, DType::kF8E4M3));
  ASSIGN_OR_RETURN(std::vector<float> scales, RowScales(s, q, module + ".weight_scale", out));
  const auto* base = static_cast<const uint8_t*>(w.data);
  const bool rows = slice.axis == LinearSlice::kRows;
  const int64_t r = rows ? slice.range.length : out, c = rows ? in : slice.range.length;
  absl::StatusOr<kernels::Fp8Weight> fw =
      rows ? kernels::MakeFp8Weight(r, c, base + slice.range.begin * in, in, scales.data() + slice.range.begin)
           : kernels::MakeFp8Weight(r, c, base + slice.range.begin, in, scales.data());
  if (!fw.ok()) return absl::InvalidArgumentError(absl::StrCat("tensor '", module, ".weight': ", fw.status().message()));
  storage.fp8.push_back(std::make_unique<kernels::Fp8Weight>(std::move(*fw)));
  kernels::WeightRef ref;
  ref.dtype = DType::kF8E4M3;
  ref.rows = r;
  ref.cols = c;
  ref.row_stride = c;
  ref.fp8 = storage.fp8.back().get();
  return ref;
}

// A 4-bit layer unpacked to one code per byte, in the engine's terms:
// W[o][i] = (q[o][i] - zero[o][g]) * scale[o][g], g = i / group.
struct Unpacked4 {
  int64_t group = 0;
  std::vector<uint8_t> q;       // [out][in]
  std::vector<float> scales;    // [out][in / group]
  std::vector<uint8_t> zeros;   // [out][in / group]
  std::vector<int32_t> perm;    // empty, or column j holds input perm[j] (GPTQ act-order)
};

uint8_t Nibble(const int32_t* words, int64_t word, int shift) {
  return static_cast<uint8_t>((static_cast<uint32_t>(words[word]) >> shift) & 0xfu);
}

absl::StatusOr<std::vector<float>> FloatMatrix(const WeightStore& s, const std::string& name,
                                               const std::vector<int64_t>& shape) {
  ASSIGN_OR_RETURN(TensorView t, GetScale(s, name, {shape}));
  std::vector<float> v(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToFloat(t.dtype, t.data, t.num_elements(), v.data());
  for (float f : v) {
    if (!std::isfinite(f)) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' holds ", f));
  }
  return v;
}

// The group size a 4-bit config gives for `in` columns (GPTQ's -1: one
// group per row), checked to divide `in`.
absl::StatusOr<int64_t> GroupOf(const CheckpointQuantization& q, const std::string& module, int64_t in) {
  const int64_t g = q.group_size == -1 ? in : q.group_size;
  if (g <= 0 || in % g != 0) {
    return absl::InvalidArgumentError(absl::StrCat(module, ": group size ", q.group_size, " does not divide ", in,
                                                   " input columns"));
  }
  return g;
}

// compressed-tensors pack-quantized: see checkpoint_quantization.h.
absl::StatusOr<Unpacked4> UnpackCompressed4(const WeightStore& s, const CheckpointQuantization& q,
                                            const std::string& module, int64_t out, int64_t in) {
  Unpacked4 u;
  ASSIGN_OR_RETURN(u.group, GroupOf(q, module, in));
  const int64_t groups = in / u.group, words = (in + 7) / 8;
  ASSIGN_OR_RETURN(TensorView shape, GetTyped(s, module + ".weight_shape", {2}, DType::kI64));
  int64_t dims[2];
  std::memcpy(dims, shape.data, sizeof dims);
  if (dims[0] != out || dims[1] != in) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", module, ".weight_shape' says [", dims[0], ", ",
                                                   dims[1], "], expected [", out, ", ", in, "]"));
  }
  ASSIGN_OR_RETURN(TensorView packed, GetTyped(s, module + ".weight_packed", {out, words}, DType::kI32));
  ASSIGN_OR_RETURN(u.scales, FloatMatrix(s, module + ".weight_scale", {out, groups}));
  const auto* w = static_cast<const int32_t*>(packed.data);
  u.q.resize(static_cast<size_t>(out * in));
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) u.q[o * in + i] = Nibble(w, o * words + i / 8, static_cast<int>(4 * (i % 8)));
  }
  // Signed values are stored + 8, so a symmetric layer's zero point is 8.
  u.zeros.assign(static_cast<size_t>(out * groups), 8);
  if (!q.symmetric) {
    const int64_t zrows = (out + 7) / 8;
    ASSIGN_OR_RETURN(TensorView zp, GetTyped(s, module + ".weight_zero_point", {zrows, groups}, DType::kI32));
    const auto* z = static_cast<const int32_t*>(zp.data);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t g = 0; g < groups; ++g) {
        u.zeros[o * groups + g] = Nibble(z, (o / 8) * groups + g, static_cast<int>(4 * (o % 8)));
      }
    }
  }
  return u;
}

// AutoAWQ GEMM and AutoGPTQ: [in, out]-major packings of the same numbers.
absl::StatusOr<Unpacked4> UnpackAwqOrGptq(const WeightStore& s, const CheckpointQuantization& q,
                                          const std::string& module, int64_t out, int64_t in) {
  Unpacked4 u;
  ASSIGN_OR_RETURN(u.group, GroupOf(q, module, in));
  const int64_t groups = in / u.group;
  if (out % 8 != 0 || in % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(module, ": [", out, ", ", in, "] is not a multiple of 8"));
  }
  const bool awq = q.scheme == CheckpointScheme::kAwq;
  // AWQ's word holds output channels 8c + {0, 2, 4, 6, 1, 3, 5, 7} in nibbles
  // 0..7 (its CUDA kernel's order): channel 8c + j sits in nibble kAwqNibble[j].
  static constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  ASSIGN_OR_RETURN(TensorView qw, GetTyped(s, module + ".qweight", awq ? std::vector<int64_t>{in, out / 8}
                                                                         : std::vector<int64_t>{in / 8, out},
                                           DType::kI32));
  ASSIGN_OR_RETURN(TensorView qz, GetTyped(s, module + ".qzeros", {groups, out / 8}, DType::kI32));
  ASSIGN_OR_RETURN(std::vector<float> scales_t, FloatMatrix(s, module + ".scales", {groups, out}));
  const auto* w = static_cast<const int32_t*>(qw.data);
  const auto* z = static_cast<const int32_t*>(qz.data);
  // Column j of the unpacked matrix is input col_of[j]; its group j / group.
  // GPTQ's act-order (desc_act) assigns groups through g_idx in any order:
  // the columns are then sorted by group (stably), which keeps each group's
  // members together, and the caller permutes the inputs to match.
  std::vector<int32_t> col_of(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) col_of[i] = static_cast<int32_t>(i);
  std::vector<int64_t> group_of(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) group_of[i] = i / u.group;
  if (!awq && s.Contains(module + ".g_idx")) {
    ASSIGN_OR_RETURN(TensorView gi, GetTyped(s, module + ".g_idx", {in}, DType::kI32));
    const auto* g = static_cast<const int32_t*>(gi.data);
    std::vector<int64_t> count(static_cast<size_t>(groups), 0);
    for (int64_t i = 0; i < in; ++i) {
      if (g[i] < 0 || g[i] >= groups) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", module, ".g_idx' puts input ", i, " in group ",
                                                       g[i], " of ", groups));
      }
      group_of[i] = g[i];
      ++count[g[i]];
    }
    for (int64_t c : count) {
      if (c != u.group) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", module, ".g_idx' has a group of ", c,
                                                       " inputs; every group must have ", u.group));
      }
    }
    std::stable_sort(col_of.begin(), col_of.end(), [&](int32_t a, int32_t b) { return group_of[a] < group_of[b]; });
    bool identity = true;
    for (int64_t j = 0; j < in; ++j) identity = identity && col_of[j] == j;
    if (!identity) u.perm = col_of;
  }
  u.q.resize(static_cast<size_t>(out * in));
  for (int64_t j = 0; j < in; ++j) {
    const int64_t i = col_of[j];
    for (int64_t o = 0; o < out; ++o) {
      u.q[o * in + j] = awq ? Nibble(w, i * (out / 8) + o / 8, 4 * kAwqNibble[o % 8])
                            : Nibble(w, (i / 8) * out + o, static_cast<int>(4 * (i % 8)));
    }
  }
  u.scales.resize(static_cast<size_t>(out * groups));
  u.zeros.resize(static_cast<size_t>(out * groups));
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t o = 0; o < out; ++o) {
      u.scales[o * groups + g] = scales_t[g * out + o];
      int zero = awq ? Nibble(z, g * (out / 8) + o / 8, 4 * kAwqNibble[o % 8])
                     : Nibble(z, g * (out / 8) + o / 8, static_cast<int>(4 * (o % 8))) + 1;  // stored minus one
      if (zero > 15) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", module, ".qzeros' holds a zero point of 16 (stored 15, GPTQ's overflow)"));
      }
      u.zeros[o * groups + g] = static_cast<uint8_t>(zero);
    }
  }
  return u;
}

absl::StatusOr<kernels::WeightRef> LoadInt4(const WeightStore& s, const CheckpointQuantization& q,
                                            const std::string& module, int64_t out, int64_t in,
                                            const LinearSlice& slice, QuantizedStorage& storage) {
  ASSIGN_OR_RETURN(Unpacked4 u, q.scheme == CheckpointScheme::kInt4Packed ? UnpackCompressed4(s, q, module, out, in)
                                                                         : UnpackAwqOrGptq(s, q, module, out, in));
  const int64_t groups = in / u.group;
  // The slice: rows [r0, r0 + nr), columns [c0, c0 + nc), groups [g0, g0 + ng).
  int64_t r0 = 0, nr = out, c0 = 0, nc = in;
  if (slice.axis == LinearSlice::kRows) {
    r0 = slice.range.begin;
    nr = slice.range.length;
  } else {
    c0 = slice.range.begin;
    nc = slice.range.length;
    if (!u.perm.empty() && nc != in) {
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": a GPTQ act-order layer's groups gather inputs from every column, so it cannot be split by "
                  "columns across tensor-parallel ranks (run it with --tp 1)"));
    }
    if (c0 % u.group != 0 || nc % u.group != 0) {
      return absl::InvalidArgumentError(absl::StrCat(module, ": a tensor-parallel slice of columns [", c0, ", ",
                                                     c0 + nc, ") does not fall on groups of ", u.group));
    }
  }
  const int64_t g0 = c0 / u.group, ng = nc / u.group;
  std::vector<uint8_t> q4(static_cast<size_t>(nr * nc)), zeros(static_cast<size_t>(nr * ng));
  std::vector<float> scales(static_cast<size_t>(nr * ng));
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(&q4[r * nc], &u.q[(r0 + r) * in + c0], static_cast<size_t>(nc));
    for (int64_t g = 0; g < ng; ++g) {
      scales[r * ng + g] = u.scales[(r0 + r) * groups + g0 + g];
      zeros[r * ng + g] = u.zeros[(r0 + r) * groups + g0 + g];
    }
  }
  absl::StatusOr<kernels::Int4Weight> w =
      kernels::PackInt4Weight(nr, nc, u.group, q4.data(), scales.data(), zeros.data());
  if (!w.ok()) return absl::InvalidArgumentError(absl::StrCat(module, ": ", w.status().message()));
  storage.int4.push_back(std::make_unique<kernels::Int4Weight>(std::move(*w)));
  kernels::WeightRef ref;
  ref.dtype = DType::kU8;
  ref.rows = nr;
  ref.cols = nc;
  ref.row_stride = nc;
  ref.int4 = storage.int4.back().get();
  if (!u.perm.empty()) {
    storage.input_perms.push_back(std::make_unique<std::vector<int32_t>>(std::move(u.perm)));
    ref.input_perm = storage.input_perms.back()->data();
  }
  return ref;
}

}  // namespace

absl::StatusOr<kernels::WeightRef> LoadQuantizedLinear(const WeightStore& store, const CheckpointQuantization& q,
                                                       const std::string& module, int64_t out, int64_t in,
                                                       const LinearSlice& slice, QuantizedStorage& storage) {
  switch (q.scheme) {
    case CheckpointScheme::kInt8:
      return LoadInt8(store, q, module, out, in, slice, storage);
    case CheckpointScheme::kFp8:
      return LoadFp8(store, q, module, out, in, slice, storage);
    case CheckpointScheme::kInt4Packed:
    case CheckpointScheme::kAwq:
    case CheckpointScheme::kGptq:
      return LoadInt4(store, q, module, out, in, slice, storage);
    case CheckpointScheme::kNone:
      return absl::InvalidArgumentError(absl::StrCat(module, ": not a quantized checkpoint"));
  }
  return absl::InternalError("unknown checkpoint scheme");
}

}  // namespace tandem
