// LoadKvCacheScales: the fp8 KV cache's static scales from vLLM-style
// `self_attn.k_scale` / `.v_scale` tensors (scalar, [1] or per KV head, any
// float dtype), a tensor-parallel rank's share of them, 1.0 without them,
// and clear errors for partial sets, bad shapes and bad values.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/kv_cache_scales.h"
#include "engine/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/test_files.h"

namespace tandem {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Bytes;
using testing::TensorSpec;

ModelConfig Config(int64_t layers, int64_t kv_heads) {
  ModelConfig c;
  c.num_hidden_layers = layers;
  c.num_key_value_heads = kv_heads;
  return c;
}

std::unique_ptr<WeightStore> Store(const std::vector<TensorSpec>& tensors) {
  const std::filesystem::path dir = testing::FreshTestDir();
  testing::WriteFile(dir / "model.safetensors", testing::BuildSafetensors(tensors));
  absl::StatusOr<std::unique_ptr<WeightStore>> s = WeightStore::Open(dir);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

TensorSpec F32(const std::string& name, std::vector<int64_t> shape, std::vector<float> v) {
  return {name, "F32", std::move(shape), Bytes(v)};
}

TEST(KvCacheScalesTest, WithoutTensorsEveryScaleIsOne) {
  auto store = Store({F32("model.norm.weight", {2}, {1, 1})});
  absl::StatusOr<KvCacheScales> s = LoadKvCacheScales(*store, Config(3, 2), {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->from_checkpoint);
  EXPECT_EQ(s->num_kv_heads, 2);
  EXPECT_EQ(s->k, std::vector<float>(6, 1.0f));
  EXPECT_EQ(s->v, std::vector<float>(6, 1.0f));
  EXPECT_THAT(KvCacheScalesNote(false), HasSubstr("1.0"));
}

TEST(KvCacheScalesTest, ScalarsAndPerHeadValuesAndTheRanksShare) {
  // Layer 0: scalars (k as [], v as [1], BF16 0.5 = 0x3F00); layer 1: one value per head.
  auto store = Store({F32("model.layers.0.self_attn.k_scale", {}, {0.25f}),
                      {"model.layers.0.self_attn.v_scale", "BF16", {1}, Bytes(std::vector<uint16_t>{0x3f00})},
                      F32("model.layers.1.self_attn.k_scale", {4}, {1, 2, 3, 4}),
                      F32("model.layers.1.self_attn.v_scale", {4}, {5, 6, 7, 8})});
  absl::StatusOr<KvCacheScales> all = LoadKvCacheScales(*store, Config(2, 4), {});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->from_checkpoint);
  EXPECT_THAT(all->k, ElementsAre(0.25f, 0.25f, 0.25f, 0.25f, 1, 2, 3, 4));
  EXPECT_THAT(all->v, ElementsAre(0.5f, 0.5f, 0.5f, 0.5f, 5, 6, 7, 8));
  // Rank 1 of 2 holds KV heads 2 and 3.
  absl::StatusOr<KvCacheScales> rank1 = LoadKvCacheScales(*store, Config(2, 4), {1, 2});
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  EXPECT_EQ(rank1->num_kv_heads, 2);
  EXPECT_THAT(rank1->k, ElementsAre(0.25f, 0.25f, 3, 4));
  EXPECT_THAT(rank1->v, ElementsAre(0.5f, 0.5f, 7, 8));
  EXPECT_EQ(rank1->k_layer(1)[1], 4.0f);
  // 8 ranks over 4 KV heads: rank 5 holds a replica of head 2.
  absl::StatusOr<KvCacheScales> rank5 = LoadKvCacheScales(*store, Config(2, 4), {5, 8});
  ASSERT_TRUE(rank5.ok()) << rank5.status();
  EXPECT_THAT(rank5->k, ElementsAre(0.25f, 3));
}

TEST(KvCacheScalesTest, BadSetsAreInvalidArgumentNamingTheTensor) {
  auto partial = Store({F32("model.layers.0.self_attn.k_scale", {}, {1}),
                        F32("model.layers.0.self_attn.v_scale", {}, {1})});
  EXPECT_ERROR(LoadKvCacheScales(*partial, Config(2, 2), {}).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("model.layers.1.self_attn.k_scale is missing"));
  auto shape = Store({F32("model.layers.0.self_attn.k_scale", {3}, {1, 1, 1}),
                      F32("model.layers.0.self_attn.v_scale", {}, {1})});
  EXPECT_ERROR(LoadKvCacheScales(*shape, Config(1, 2), {}).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("model.layers.0.self_attn.k_scale"), HasSubstr("[2]"));
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    auto values = Store({F32("model.layers.0.self_attn.k_scale", {}, {1}),
                         F32("model.layers.0.self_attn.v_scale", {2}, {1, bad})});
    EXPECT_ERROR(LoadKvCacheScales(*values, Config(1, 2), {}).status(), absl::StatusCode::kInvalidArgument,
                 HasSubstr("model.layers.0.self_attn.v_scale"), HasSubstr("finite and positive"));
  }
}

}  // namespace
}  // namespace tandem
