// Tests for WeightStore: single-file and sharded model directories, Get()'s
// shape checks, and every directory-level error (status code + message).
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/test_files.h"

namespace tandem {
namespace {

using ::tandem::testing::Bytes;
using ::tandem::testing::BuildSafetensors;
using ::tandem::testing::FreshTestDir;
using ::tandem::testing::TensorSpec;
using ::tandem::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

TensorSpec F32(const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
  return {name, "F32", std::move(shape), Bytes(values)};
}

// Two shards and an index mapping a, b -> shard 1 and c -> shard 2.
void WriteShardedModel(const fs::path& dir) {
  WriteFile(dir / "model-00001-of-00002.safetensors",
            BuildSafetensors({F32("a", {2}, {1, 2}), F32("b", {1, 1}, {3})}));
  WriteFile(dir / "model-00002-of-00002.safetensors",
            BuildSafetensors({F32("c", {3}, {4, 5, 6})}));
  WriteFile(dir / "model.safetensors.index.json", R"({
    "metadata": {"total_size": 24},
    "weight_map": {"a": "model-00001-of-00002.safetensors",
                   "b": "model-00001-of-00002.safetensors",
                   "c": "model-00002-of-00002.safetensors"}})");
}

TEST(WeightStoreTest, OpensSingleFile) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors",
            BuildSafetensors({F32("x.weight", {2, 2}, {1, 2, 3, 4}), F32("y", {1}, {7})}));
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Contains("x.weight"));
  EXPECT_FALSE((*store)->Contains("z"));
  EXPECT_THAT((*store)->Names(), ElementsAre("x.weight", "y"));
  auto x = (*store)->Get("x.weight", {2, 2});
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_THAT(x->shape, ElementsAre(2, 2));
  EXPECT_EQ(static_cast<const float*>(x->data)[3], 4.0f);
}

TEST(WeightStoreTest, OpensShardedIndex) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("a", "b", "c"));
  auto c = (*store)->Get("c", {3});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(static_cast<const float*>(c->data)[2], 6.0f);
  auto b = (*store)->Get("b", {1, 1});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*static_cast<const float*>(b->data), 3.0f);
}

TEST(WeightStoreTest, PrefersIndexOverSingleFile) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model.safetensors", BuildSafetensors({F32("stray", {1}, {0})}));
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE((*store)->Contains("stray"));
}

TEST(WeightStoreTest, AcceptsOneOtherSafetensorsFile) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "adapter.safetensors", BuildSafetensors({F32("w", {1}, {2})}));
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Contains("w"));
}

TEST(WeightStoreTest, GetRejectsWrongShape) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors", BuildSafetensors({F32("x.weight", {2, 3}, {1, 2, 3, 4, 5, 6})}));
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_ERROR((*store)->Get("x.weight", {3, 2}).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("'x.weight'"), HasSubstr((dir / "model.safetensors").string()),
               HasSubstr("expected shape [3, 2]"), HasSubstr("got [2, 3]"));
}

TEST(WeightStoreTest, GetUnknownTensorIsNotFound) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors", BuildSafetensors({F32("x", {1}, {1})}));
  auto store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_ERROR((*store)->Get("lm_head.weight", {1}).status(), absl::StatusCode::kNotFound,
               HasSubstr("'lm_head.weight'"), HasSubstr(dir.string()));
}

TEST(WeightStoreTest, RejectsMissingDirectory) {
  const fs::path dir = FreshTestDir() / "nope";
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kNotFound,
               HasSubstr(dir.string()));
}

TEST(WeightStoreTest, RejectsDirectoryWithoutWeights) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "config.json", "{}");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kNotFound,
               HasSubstr((dir / "model.safetensors").string()));
}

TEST(WeightStoreTest, RejectsSeveralUnindexedFiles) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "one.safetensors", BuildSafetensors({F32("a", {1}, {1})}));
  WriteFile(dir / "two.safetensors", BuildSafetensors({F32("b", {1}, {1})}));
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr(dir.string()), HasSubstr("one.safetensors"),
               HasSubstr("two.safetensors"));
}

TEST(WeightStoreTest, RejectsMissingShard) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  fs::remove(dir / "model-00002-of-00002.safetensors");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kNotFound,
               HasSubstr((dir / "model-00002-of-00002.safetensors").string()),
               HasSubstr("model.safetensors.index.json"));
}

TEST(WeightStoreTest, RejectsTensorMissingFromItsShard) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model-00002-of-00002.safetensors",
            BuildSafetensors({F32("d", {3}, {4, 5, 6})}));
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'c'"),
               HasSubstr((dir / "model-00002-of-00002.safetensors").string()),
               HasSubstr("model.safetensors.index.json"));
}

TEST(WeightStoreTest, RejectsTensorInTwoShards) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model-00002-of-00002.safetensors",
            BuildSafetensors({F32("c", {3}, {4, 5, 6}), F32("a", {2}, {1, 2})}));
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'a'"), HasSubstr("model-00001-of-00002.safetensors"),
               HasSubstr("model-00002-of-00002.safetensors"));
}

TEST(WeightStoreTest, RejectsIndexThatIsNotJson) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr((dir / "model.safetensors.index.json").string()),
               HasSubstr("parse error"));
}

TEST(WeightStoreTest, RejectsIndexWithoutWeightMap) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr((dir / "model.safetensors.index.json").string()),
               HasSubstr("weight_map"));
}

TEST(WeightStoreTest, RejectsShardPathOutsideDirectory) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors.index.json",
            R"({"weight_map": {"a": "../elsewhere.safetensors"}})");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'a'"), HasSubstr("plain file name"));
}

// Found by fuzz/weight_index_fuzz.cc: a shard name holding a NUL ("\u0000"
// in JSON) opened the file named by the part before it, and "." / ".."
// passed as plain file names.
TEST(WeightStoreTest, RejectsShardNamesThatAreNotPlainFileNames) {
  const fs::path dir = FreshTestDir();
  WriteFile(dir / "model.safetensors", BuildSafetensors({F32("a", {1}, {1})}));
  for (const std::string& shard : {std::string(R"(model.safetensors\u0000.x)"), std::string(".."), std::string(".")}) {
    SCOPED_TRACE(shard);
    WriteFile(dir / "model.safetensors.index.json", R"({"weight_map": {"a": ")" + shard + R"("}})");
    EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'a'"),
                 HasSubstr("plain file name"));
  }
}

TEST(WeightStoreTest, PropagatesCorruptShardError) {
  const fs::path dir = FreshTestDir();
  WriteShardedModel(dir);
  WriteFile(dir / "model-00002-of-00002.safetensors", "abc");
  EXPECT_ERROR(WeightStore::Open(dir).status(), absl::StatusCode::kDataLoss,
               HasSubstr((dir / "model-00002-of-00002.safetensors").string()));
}

}  // namespace
}  // namespace tandem
