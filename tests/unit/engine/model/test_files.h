// Test fixture generators for the weight-loading tests: a fresh scratch
// directory per test, and writers for (possibly malformed) safetensors files,
// index files and JSON configs.
// Thread-safety: each test uses its own directory; functions are not shared.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// EXPECT_ERROR(status, want_code, matchers...): the status has exactly
// `want_code` and its message satisfies every gmock string matcher.
#define EXPECT_ERROR(status, want_code, ...)                                      \
  do {                                                                            \
    const ::absl::Status tandem_s_ = (status);                                    \
    EXPECT_EQ(tandem_s_.code(), (want_code)) << tandem_s_;                        \
    EXPECT_THAT(std::string(tandem_s_.message()), ::testing::AllOf(__VA_ARGS__)) \
        << tandem_s_;                                                             \
  } while (0)

namespace tandem::testing {

// An empty directory unique to the running test, under $TANDEM_TEST_WORK (set
// by CTest) or gtest's TempDir().
inline std::filesystem::path FreshTestDir() {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  std::filesystem::path base = (work != nullptr && *work != '\0')
                                   ? std::filesystem::path(work)
                                   : std::filesystem::path(::testing::TempDir());
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      base / "engine_model" / (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Raw safetensors bytes: the 8-byte little-endian `header_len` (defaults to the
// real length), the header text, then `buffer`.
inline std::string RawSafetensors(const std::string& header, const std::string& buffer,
                                  uint64_t header_len = UINT64_MAX) {
  if (header_len == UINT64_MAX) header_len = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
  return out + header + buffer;
}

// Any trivially copyable values as bytes.
template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

struct TensorSpec {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16"
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian bytes
};

// A well-formed safetensors file: tensors packed back to back in order, header
// padded with spaces to a multiple of 8 (as the reference writer does).
inline std::string BuildSafetensors(const std::vector<TensorSpec>& tensors) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string buffer;
  for (const TensorSpec& t : tensors) {
    header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i > 0) header += ",";
      header += std::to_string(t.shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(buffer.size()) + "," +
              std::to_string(buffer.size() + t.data.size()) + "]}";
    buffer += t.data;
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  return RawSafetensors(header, buffer);
}

}  // namespace tandem::testing
