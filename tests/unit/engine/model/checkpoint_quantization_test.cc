// Tests for checkpoint_quantization (config.json's quantization_config as
// the producers write it) and quantized_linear (one layer's tensors, sliced
// for a tensor-parallel shard, with every malformed tensor named).
#include "engine/model/checkpoint_quantization.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/kernels/int4_matmul.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/model/dtype.h"
#include "engine/model/quantized_linear.h"
#include "engine/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/test_files.h"

namespace tandem {
namespace {

using ::tandem::testing::BuildSafetensors;
using ::tandem::testing::Bytes;
using ::tandem::testing::FreshTestDir;
using ::tandem::testing::TensorSpec;
using ::tandem::testing::WriteFile;
using ::testing::HasSubstr;

// A compressed-tensors W8A8 config as llm-compressor writes it.
constexpr char kInt8W8A8[] = R"({"quantization_config": {
  "quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
  "config_groups": {"group_0": {"targets": ["Linear"],
    "weights": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel", "dynamic": false,
                "group_size": null, "observer": "minmax"},
    "input_activations": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "token", "dynamic": true},
    "output_activations": null}},
  "ignore": ["lm_head", "re:.*layers\\.1\\.mlp\\.down_proj"]}})";

TEST(CheckpointQuantizationTest, NoConfigIsFloat) {
  absl::StatusOr<CheckpointQuantization> q = ParseCheckpointQuantization(R"({"hidden_size": 8})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE(q->quantized());
  EXPECT_FALSE(q->QuantizesModule("model.layers.0.mlp.up_proj"));
  q = ParseCheckpointQuantization(R"({"quantization_config": null})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE(q->quantized());
}

TEST(CheckpointQuantizationTest, CompressedTensorsInt8W8A8) {
  absl::StatusOr<CheckpointQuantization> q = ParseCheckpointQuantization(kInt8W8A8);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->scheme, CheckpointScheme::kInt8);
  EXPECT_EQ(q->strategy, ScaleStrategy::kChannel);
  EXPECT_EQ(q->bits, 8);
  EXPECT_TRUE(q->quantized_activations);
  EXPECT_TRUE(q->QuantizesModule("model.layers.0.mlp.down_proj"));
  EXPECT_TRUE(q->QuantizesModule("model.layers.1.self_attn.q_proj"));
  EXPECT_FALSE(q->QuantizesModule("model.layers.1.mlp.down_proj"));  // ignored by regex
  EXPECT_TRUE(q->QuantizesModule("model.layers.11.mlp.down_proj"));   // the regex is anchored
  EXPECT_FALSE(q->QuantizesModule("lm_head"));
  EXPECT_THAT(q->Describe(), HasSubstr("int8"));
  EXPECT_THAT(q->Describe(), HasSubstr("per token"));
}

TEST(CheckpointQuantizationTest, CompressedTensorsFp8AndPackedInt4) {
  absl::StatusOr<CheckpointQuantization> fp8 = ParseCheckpointQuantization(R"({"quantization_config": {
    "quant_method": "compressed-tensors", "format": "float-quantized",
    "config_groups": {"group_0": {"targets": ["Linear"],
      "weights": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "channel", "dynamic": false},
      "input_activations": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "token", "dynamic": true}}},
    "ignore": ["lm_head"]}})");
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_EQ(fp8->scheme, CheckpointScheme::kFp8);

  absl::StatusOr<CheckpointQuantization> w4 = ParseCheckpointQuantization(R"({"quantization_config": {
    "quant_method": "compressed-tensors", "format": "pack-quantized",
    "config_groups": {"group_0": {"targets": ["re:.*proj$"],
      "weights": {"num_bits": 4, "type": "int", "symmetric": false, "strategy": "group", "group_size": 128}}},
    "ignore": []}})");
  ASSERT_TRUE(w4.ok()) << w4.status();
  EXPECT_EQ(w4->scheme, CheckpointScheme::kInt4Packed);
  EXPECT_EQ(w4->group_size, 128);
  EXPECT_FALSE(w4->symmetric);
  EXPECT_TRUE(w4->QuantizesModule("model.layers.3.self_attn.o_proj"));
  EXPECT_FALSE(w4->QuantizesModule("lm_head"));  // not targeted
}

TEST(CheckpointQuantizationTest, AwqAndGptq) {
  absl::StatusOr<CheckpointQuantization> awq = ParseCheckpointQuantization(R"({"quantization_config": {
    "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true, "version": "gemm",
    "modules_to_not_convert": null}})");
  ASSERT_TRUE(awq.ok()) << awq.status();
  EXPECT_EQ(awq->scheme, CheckpointScheme::kAwq);
  EXPECT_FALSE(awq->symmetric);
  EXPECT_TRUE(awq->QuantizesModule("model.layers.0.mlp.gate_proj"));
  EXPECT_FALSE(awq->QuantizesModule("lm_head"));

  absl::StatusOr<CheckpointQuantization> gptq = ParseCheckpointQuantization(R"({"quantization_config": {
    "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true, "sym": true}})");
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  EXPECT_EQ(gptq->scheme, CheckpointScheme::kGptq);
  EXPECT_TRUE(gptq->gptq_act_order);
  EXPECT_TRUE(gptq->symmetric);
}

TEST(CheckpointQuantizationTest, UnsupportedConfigsNameTheField) {
  struct Case {
    const char* json;
    const char* field;
  };
  const Case cases[] = {
      {R"({"quantization_config": {"quant_method": "bitsandbytes"}})", "quant_method"},
      {R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized"}})",
       "config_groups"},
      {R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
          "config_groups": {"a": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int"}},
                            "b": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int"}}}}})",
       "config_groups"},
      {R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
          "config_groups": {"a": {"targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "strategy": "block"}}}}})",
       "strategy"},
      {R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
          "config_groups": {"a": {"targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": false, "strategy": "channel"}}}}})",
       "symmetric"},
      {R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
          "config_groups": {"a": {"targets": ["re:(unclosed"],
            "weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}}})",
       "targets"},
      {R"({"quantization_config": {"quant_method": "awq", "bits": 3}})", "bits"},
      {R"({"quantization_config": {"quant_method": "awq", "bits": 4, "version": "gemv"}})", "version"},
      {R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}})",
       "checkpoint_format"},
      {R"({"quantization_config": 7})", "quantization_config"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<CheckpointQuantization> q = ParseCheckpointQuantization(c.json, "dir/config.json");
    ASSERT_FALSE(q.ok()) << c.json;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(q.status().message()), HasSubstr("dir/config.json")) << c.json;
    EXPECT_THAT(std::string(q.status().message()), HasSubstr(c.field)) << q.status();
  }
}

// A 3 x 4 int8 layer "m" with per-row scales, in a store of its own.
class QuantizedLinearTest : public ::testing::Test {
 protected:
  std::unique_ptr<WeightStore> Write(std::vector<TensorSpec> tensors) {
    const std::filesystem::path dir = FreshTestDir();
    WriteFile(dir / "model.safetensors", BuildSafetensors(tensors));
    absl::StatusOr<std::unique_ptr<WeightStore>> s = WeightStore::Open(dir);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static TensorSpec Weight() {
    return {"m.weight", "I8", {3, 4}, Bytes(std::vector<int8_t>{1, -2, 3, -128, 5, 6, 7, 8, 0, 0, 0, 127})};
  }
  static TensorSpec Scale(std::vector<int64_t> shape, std::vector<float> v) {
    return {"m.weight_scale", "F32", std::move(shape), Bytes(v)};
  }
  CheckpointQuantization Int8(ScaleStrategy strategy = ScaleStrategy::kChannel) {
    CheckpointQuantization q;
    q.scheme = CheckpointScheme::kInt8;
    q.bits = 8;
    q.strategy = strategy;
    return q;
  }
  QuantizedStorage storage_;
};

TEST_F(QuantizedLinearTest, Int8RowAndColumnSlices) {
  auto store = Write({Weight(), Scale({3, 1}, {0.5f, 0.25f, 2.0f})});
  absl::StatusOr<kernels::WeightRef> rows =
      LoadQuantizedLinear(*store, Int8(), "m", 3, 4, {LinearSlice::kRows, {1, 2}}, storage_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_NE(rows->int8, nullptr);
  EXPECT_EQ(rows->rows, 2);
  EXPECT_EQ(rows->cols, 4);
  EXPECT_EQ(rows->data, nullptr);
  EXPECT_THAT(rows->int8->scales, ::testing::ElementsAre(0.25f, 2.0f));
  EXPECT_EQ(rows->int8->data[0], 5);
  EXPECT_EQ(rows->int8->data[rows->int8->padded_cols + 3], 127);
  EXPECT_THAT(rows->int8->row_sums, ::testing::ElementsAre(26, 127));

  absl::StatusOr<kernels::WeightRef> cols =
      LoadQuantizedLinear(*store, Int8(), "m", 3, 4, {LinearSlice::kColumns, {2, 2}}, storage_);
  ASSERT_TRUE(cols.ok()) << cols.status();
  EXPECT_EQ(cols->rows, 3);
  EXPECT_EQ(cols->cols, 2);
  EXPECT_THAT(cols->int8->scales, ::testing::ElementsAre(0.5f, 0.25f, 2.0f));
  EXPECT_EQ(cols->int8->data[0], 3);
  EXPECT_EQ(cols->int8->data[1], -128);
  EXPECT_THAT(cols->int8->row_sums, ::testing::ElementsAre(-125, 15, 127));

  // The W8A8 product with the loaded -128 is exact: x = e_3 picks column 3.
  const std::vector<float> x = {0, 0, 0, 1};
  std::vector<float> y(3);
  absl::StatusOr<kernels::WeightRef> whole =
      LoadQuantizedLinear(*store, Int8(), "m", 3, 4, {LinearSlice::kRows, {0, 3}}, storage_);
  ASSERT_TRUE(whole.ok());
  kernels::MatMulInt8(x.data(), 1, *whole->int8, nullptr, y.data());
  // x quantizes to 127 at scale 1/127: y = 127 * q * (scale / 127) = q * scale.
  EXPECT_THAT(y, ::testing::ElementsAre(::testing::FloatEq(-64.0f), ::testing::FloatEq(2.0f),
                                        ::testing::FloatEq(254.0f)));
}

TEST_F(QuantizedLinearTest, PerTensorScaleBroadcasts) {
  auto store = Write({Weight(), Scale({1}, {0.5f})});
  absl::StatusOr<kernels::WeightRef> w =
      LoadQuantizedLinear(*store, Int8(ScaleStrategy::kTensor), "m", 3, 4, {LinearSlice::kRows, {0, 3}}, storage_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->int8->scales, ::testing::ElementsAre(0.5f, 0.5f, 0.5f));
}

TEST_F(QuantizedLinearTest, BadTensorsAreNamed) {
  const LinearSlice all{LinearSlice::kRows, {0, 3}};
  {
    auto store = Write({Weight()});
    EXPECT_ERROR(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).status(),
                 absl::StatusCode::kNotFound, HasSubstr("m.weight_scale"));
  }
  {
    auto store = Write({Weight(), Scale({4, 1}, {1, 1, 1, 1})});
    EXPECT_ERROR(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.weight_scale"));
  }
  {
    auto store = Write({Weight(), Scale({3, 1}, {1, -1, 1})});
    EXPECT_ERROR(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.weight_scale"), HasSubstr(">= 0"));
  }
  {
    TensorSpec f = Weight();
    f.dtype = "U8";
    auto store = Write({f, Scale({3, 1}, {1, 1, 1})});
    EXPECT_ERROR(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.weight"), HasSubstr("expected I8"));
  }
  {
    auto store = Write({Weight(), Scale({3, 1}, {1, 1, 1}),
                        {"m.weight_zero_point", "I8", {3, 1}, Bytes(std::vector<int8_t>{0, 1, 0})}});
    EXPECT_ERROR(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.weight_zero_point"));
  }
  {
    auto store = Write({Weight(), Scale({3, 1}, {1, 1, 1}),
                        {"m.weight_zero_point", "I8", {3, 1}, Bytes(std::vector<int8_t>{0, 0, 0})}});
    EXPECT_TRUE(LoadQuantizedLinear(*store, Int8(), "m", 3, 4, all, storage_).ok());
  }
}

// A GPTQ layer [out 8, in 64], groups of 32, packed by hand from the format's
// description; its codes, zero points and scales follow formulas the test
// evaluates again to check every dequantized weight.
class GptqLinearTest : public QuantizedLinearTest {
 protected:
  static int Code(int i, int o) { return (i * 3 + o) % 16; }
  static int Zero(int g, int o) { return (g + o) % 15 + 1; }  // 1..15: stored minus one
  static float Scale(int g, int o) { return 0.5f + static_cast<float>(g) + 0.25f * static_cast<float>(o); }
  std::vector<TensorSpec> Tensors(std::vector<int32_t> g_idx = {}, int overflow_zero_at = -1) {
    std::vector<int32_t> qweight(8 * 8, 0), qzeros(2 * 1, 0);
    std::vector<uint16_t> scales(2 * 8);
    for (int i = 0; i < 64; ++i) {
      for (int o = 0; o < 8; ++o) qweight[(i / 8) * 8 + o] |= Code(i, o) << (4 * (i % 8));
    }
    for (int g = 0; g < 2; ++g) {
      for (int o = 0; o < 8; ++o) {
        const int stored = o == overflow_zero_at ? 15 : Zero(g, o) - 1;
        qzeros[g] |= stored << (4 * o);
        scales[g * 8 + o] = FloatToF16(Scale(g, o));
      }
    }
    if (g_idx.empty()) {
      for (int i = 0; i < 64; ++i) g_idx.push_back(i / 32);
    }
    return {{"m.qweight", "I32", {8, 8}, Bytes(qweight)},
            {"m.qzeros", "I32", {2, 1}, Bytes(qzeros)},
            {"m.scales", "F16", {2, 8}, Bytes(scales)},
            {"m.g_idx", "I32", {64}, Bytes(g_idx)}};
  }
  static CheckpointQuantization Gptq() {
    CheckpointQuantization q;
    q.scheme = CheckpointScheme::kGptq;
    q.bits = 4;
    q.strategy = ScaleStrategy::kGroup;
    q.group_size = 32;
    return q;
  }
};

TEST_F(GptqLinearTest, RowAndGroupAlignedColumnSlicesDequantizeByTheFormula) {
  auto store = Write(Tensors());
  for (const LinearSlice& slice : {LinearSlice{LinearSlice::kRows, {2, 4}}, LinearSlice{LinearSlice::kColumns, {32, 32}},
                                   LinearSlice{LinearSlice::kRows, {0, 8}}}) {
    absl::StatusOr<kernels::WeightRef> w = LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, slice, storage_);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_NE(w->int4, nullptr);
    const bool rows = slice.axis == LinearSlice::kRows;
    const int r0 = rows ? static_cast<int>(slice.range.begin) : 0;
    const int c0 = rows ? 0 : static_cast<int>(slice.range.begin);
    ASSERT_EQ(w->rows, rows ? slice.range.length : 8);
    ASSERT_EQ(w->cols, rows ? 64 : slice.range.length);
    std::vector<float> row(static_cast<size_t>(w->cols));
    for (int r = 0; r < w->rows; ++r) {
      kernels::DequantizeInt4Row(*w->int4, r, row.data());
      for (int c = 0; c < w->cols; ++c) {
        const int o = r0 + r, i = c0 + c, g = i / 32;
        ASSERT_EQ(row[c], static_cast<float>(Code(i, o) - Zero(g, o)) * Scale(g, o)) << o << " " << i;
      }
    }
  }
}

// Act-order: g_idx sends input i to group i % 2. The loader sorts the
// columns by group and sets input_perm; column j of the quantized matrix
// must then be input input_perm[j] with that input's group parameters.
TEST_F(GptqLinearTest, ActOrderColumnsAreSortedByGroupAndThePermutationSet) {
  std::vector<int32_t> g_idx;
  for (int i = 0; i < 64; ++i) g_idx.push_back(i % 2);
  auto store = Write(Tensors(g_idx));
  absl::StatusOr<kernels::WeightRef> w =
      LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kRows, {1, 6}}, storage_);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_NE(w->input_perm, nullptr);
  std::vector<int> seen(64, 0);
  std::vector<float> row(64);
  for (int r = 0; r < 6; ++r) {
    kernels::DequantizeInt4Row(*w->int4, r, row.data());
    for (int j = 0; j < 64; ++j) {
      const int i = w->input_perm[j], o = r + 1, g = i % 2;
      if (r == 0) ++seen[i];
      EXPECT_EQ(j / 32, g) << "column " << j << " holds input " << i << " of group " << g;
      ASSERT_EQ(row[j], static_cast<float>(Code(i, o) - Zero(g, o)) * Scale(g, o)) << o << " " << i;
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 64);  // a permutation
}

TEST_F(GptqLinearTest, RefusesSplitGroupsActOrderAndZeroOverflow) {
  {
    auto store = Write(Tensors());
    EXPECT_ERROR(LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kColumns, {16, 32}}, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("groups of 32"));
  }
  {
    std::vector<int32_t> g_idx;
    for (int i = 0; i < 64; ++i) g_idx.push_back(i % 2);  // act-order: groups interleaved
    auto store = Write(Tensors(g_idx));
    EXPECT_ERROR(LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kColumns, {0, 32}}, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("act-order"), HasSubstr("--tp 1"));
  }
  {
    std::vector<int32_t> g_idx(64, 0);  // a group of 64 and an empty one
    auto store = Write(Tensors(g_idx));
    EXPECT_ERROR(LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kRows, {0, 8}}, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.g_idx"), HasSubstr("group of 64"));
  }
  {
    auto store = Write(Tensors({}, /*overflow_zero_at=*/3));
    EXPECT_ERROR(LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kRows, {0, 8}}, storage_).status(),
                 absl::StatusCode::kInvalidArgument, HasSubstr("m.qzeros"));
  }
  {
    std::vector<TensorSpec> t = Tensors();
    t.erase(t.begin() + 2);  // no scales
    auto store = Write(t);
    EXPECT_ERROR(LoadQuantizedLinear(*store, Gptq(), "m", 8, 64, {LinearSlice::kRows, {0, 8}}, storage_).status(),
                 absl::StatusCode::kNotFound, HasSubstr("m.scales"));
  }
}

}  // namespace
}  // namespace tandem
