// Tests for SafetensorsFile: one test per malformed case (exact status code,
// message naming the file and the tensor), and round trips of valid files.
#include <cstdint>
#include <filesystem>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"
#include "engine/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/test_files.h"

namespace tandem {
namespace {

using ::tandem::testing::Bytes;
using ::tandem::testing::BuildSafetensors;
using ::tandem::testing::FreshTestDir;
using ::tandem::testing::RawSafetensors;
using ::tandem::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Writes `bytes` to a fresh file and opens it; returns the status.
class SafetensorsTest : public ::testing::Test {
 protected:
  absl::Status OpenBytes(const std::string& bytes) {
    path_ = FreshTestDir() / "weights.safetensors";
    WriteFile(path_, bytes);
    return SafetensorsFile::Open(path_).status();
  }
  // A header with one tensor "w" whose entry is `entry`, and `buffer`.
  absl::Status OpenOneTensor(const std::string& entry, const std::string& buffer) {
    return OpenBytes(RawSafetensors("{\"w\":" + entry + "}", buffer));
  }
  std::filesystem::path path_;
};

TEST_F(SafetensorsTest, RejectsMissingFile) {
  path_ = FreshTestDir() / "absent.safetensors";
  EXPECT_ERROR(SafetensorsFile::Open(path_).status(), absl::StatusCode::kNotFound,
               HasSubstr(path_.string()));
}

TEST_F(SafetensorsTest, RejectsEmptyFile) {
  EXPECT_ERROR(OpenBytes(""), absl::StatusCode::kDataLoss, HasSubstr(path_.string()),
               HasSubstr("truncated"));
}

TEST_F(SafetensorsTest, RejectsTruncatedFile) {
  EXPECT_ERROR(OpenBytes(std::string("\x10\0\0", 3)), absl::StatusCode::kDataLoss,
               HasSubstr(path_.string()), HasSubstr("8-byte header length"));
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  EXPECT_ERROR(OpenBytes(RawSafetensors("{}", "", /*header_len=*/3)),
               absl::StatusCode::kDataLoss, HasSubstr(path_.string()), HasSubstr("header length"));
}

TEST_F(SafetensorsTest, RejectsHugeHeaderLength) {
  EXPECT_ERROR(OpenBytes(RawSafetensors("{}", "", /*header_len=*/UINT64_MAX - 1)),
               absl::StatusCode::kDataLoss, HasSubstr(path_.string()));
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  EXPECT_ERROR(OpenBytes(RawSafetensors("{\"w\": [1, 2", "")),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("not valid JSON"), HasSubstr("parse error"));
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  EXPECT_ERROR(OpenBytes(RawSafetensors("[1, 2, 3]", "")), absl::StatusCode::kInvalidArgument,
               HasSubstr(path_.string()), HasSubstr("JSON object"));
}

// Found reviewing what fuzz/safetensors_fuzz.cc cannot reach (its inputs
// stay under 8 KB): a header nested a million levels deep used to overflow
// the stack when the error message quoted it.
TEST_F(SafetensorsTest, RejectsDeeplyNestedHeaderWithoutOverflowingTheStack) {
  const int depth = 1000000;
  EXPECT_ERROR(OpenBytes(RawSafetensors(std::string(depth, '[') + std::string(depth, ']'), "")),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()), HasSubstr("nested deeper than"));
}

TEST_F(SafetensorsTest, RejectsTensorEntryThatIsNotAnObject) {
  EXPECT_ERROR(OpenOneTensor("[0, 4]", std::string(4, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"));
}

TEST_F(SafetensorsTest, RejectsMetadataThatIsNotAnObject) {
  EXPECT_ERROR(OpenBytes(RawSafetensors("{\"__metadata__\": 7}", "")),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("__metadata__"));
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  EXPECT_ERROR(
      OpenOneTensor(R"({"dtype":"I16","shape":[1],"data_offsets":[0,2]})", std::string(2, '\0')),
      absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()), HasSubstr("tensor 'w'"),
      HasSubstr("'I16'"), HasSubstr("supported: F32, F16, BF16, F8_E4M3, I8, U8, I32, I64"));
}

TEST_F(SafetensorsTest, RejectsMissingDtype) {
  EXPECT_ERROR(OpenOneTensor(R"({"shape":[1],"data_offsets":[0,4]})", std::string(4, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("dtype"));
}

TEST_F(SafetensorsTest, RejectsShapeThatIsNotAList) {
  EXPECT_ERROR(
      OpenOneTensor(R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})", std::string(16, '\0')),
      absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()), HasSubstr("tensor 'w'"),
      HasSubstr("shape"));
}

TEST_F(SafetensorsTest, RejectsNegativeShapeDimension) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]})",
                             std::string(16, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("non-negative"));
}

TEST_F(SafetensorsTest, RejectsFractionalShapeDimension) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})",
                             std::string(8, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("shape"));
}

TEST_F(SafetensorsTest, RejectsShapeWhoseByteSizeOverflows) {
  EXPECT_ERROR(
      OpenOneTensor(
          R"({"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]})", ""),
      absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()), HasSubstr("tensor 'w'"),
      HasSubstr("overflows"));
}

TEST_F(SafetensorsTest, RejectsMissingDataOffsets) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[1]})", std::string(4, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("data_offsets"));
}

TEST_F(SafetensorsTest, RejectsDataOffsetsOfWrongLength) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})",
                             std::string(8, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("data_offsets"));
}

TEST_F(SafetensorsTest, RejectsNegativeDataOffset) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})",
                             std::string(8, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("data_offsets"));
}

TEST_F(SafetensorsTest, RejectsNonIntegerDataOffsets) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":["0","4"]})",
                             std::string(4, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("data_offsets"));
}

TEST_F(SafetensorsTest, RejectsEndBeforeBegin) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})",
                             std::string(8, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("ends before it begins"));
}

TEST_F(SafetensorsTest, RejectsOffsetsPastEndOfBuffer) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})",
                             std::string(12, '\0')),
               absl::StatusCode::kDataLoss, HasSubstr(path_.string()), HasSubstr("tensor 'w'"),
               HasSubstr("past the end"));
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string header =
      R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_ERROR(OpenBytes(RawSafetensors(header, std::string(12, '\0'))),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("'a'"), HasSubstr("'b'"), HasSubstr("overlap"));
}

TEST_F(SafetensorsTest, RejectsByteSizeThatDoesNotMatchShape) {
  EXPECT_ERROR(OpenOneTensor(R"({"dtype":"F16","shape":[2,3],"data_offsets":[0,8]})",
                             std::string(8, '\0')),
               absl::StatusCode::kInvalidArgument, HasSubstr(path_.string()),
               HasSubstr("tensor 'w'"), HasSubstr("needs 12"));
}

TEST_F(SafetensorsTest, ReadsF32Values) {
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  path_ = FreshTestDir() / "f32.safetensors";
  WriteFile(path_, BuildSafetensors({{"m.weight", "F32", {2, 3}, Bytes(values)}}));
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView& view = (*file)->tensors().at("m.weight");
  EXPECT_EQ(view.name, "m.weight");
  EXPECT_EQ(view.dtype, DType::kF32);
  EXPECT_THAT(view.shape, ElementsAre(2, 3));
  EXPECT_EQ(view.num_elements(), 6);
  EXPECT_EQ(view.size_bytes, 24u);
  const auto* data = static_cast<const float*>(view.data);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(data[i], values[i]) << i;
}

TEST_F(SafetensorsTest, ReadsF16AndBf16Values) {
  const std::vector<float> values = {1.0f, -0.5f, 65504.0f, 0.333251953125f};
  std::vector<uint16_t> f16, bf16;
  for (float v : values) {
    f16.push_back(FloatToF16(v));
    bf16.push_back(FloatToBf16(v));
  }
  path_ = FreshTestDir() / "half.safetensors";
  WriteFile(path_, BuildSafetensors({{"h", "F16", {4}, Bytes(f16)},
                                     {"b", "BF16", {2, 2}, Bytes(bf16)}}));
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView& h = (*file)->tensors().at("h");
  const TensorView& b = (*file)->tensors().at("b");
  ASSERT_EQ(h.dtype, DType::kF16);
  ASSERT_EQ(b.dtype, DType::kBF16);
  EXPECT_THAT(b.shape, ElementsAre(2, 2));
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(F16ToFloat(static_cast<const uint16_t*>(h.data)[i]), values[i]) << i;
    EXPECT_EQ(static_cast<const uint16_t*>(b.data)[i], FloatToBf16(values[i])) << i;
  }
  EXPECT_EQ(Bf16ToFloat(static_cast<const uint16_t*>(b.data)[0]), 1.0f);
}

TEST_F(SafetensorsTest, AcceptsEmptyTensorsScalarsAndUnsortedOffsets) {
  const std::vector<float> two = {4.0f, 5.0f};
  const std::vector<float> one = {9.0f};
  const std::string header =
      R"({"late":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
      R"("scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("empty":{"dtype":"BF16","shape":[0,7],"data_offsets":[4,4]},)"
      R"("__metadata__":{"format":"pt"}})";
  ASSERT_TRUE(OpenBytes(RawSafetensors(header, Bytes(one) + Bytes(two))).ok());
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors.at("scalar").num_elements(), 1);
  // The data need not be 4-byte aligned (the header's length sets where it
  // starts): read it with memcpy.
  auto float_at = [](const void* data, int i) {
    float f;
    std::memcpy(&f, static_cast<const char*>(data) + 4 * i, sizeof f);
    return f;
  };
  EXPECT_EQ(float_at(tensors.at("scalar").data, 0), 9.0f);
  EXPECT_EQ(tensors.at("empty").num_elements(), 0);
  EXPECT_EQ(tensors.at("empty").size_bytes, 0u);
  EXPECT_EQ(float_at(tensors.at("late").data, 1), 5.0f);
}

TEST_F(SafetensorsTest, AcceptsHeaderWithNoTensors) {
  ASSERT_TRUE(OpenBytes(RawSafetensors("{}", "")).ok());
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_EQ((*file)->path(), path_);
}

}  // namespace
}  // namespace tandem
