// Helpers for the tokenizer tests: where the CTest fixture step wrote its
// files, JSON loading, scratch tokenizer directories and a UTF-8 checker.
// Thread-safety: tests are single-threaded; each test uses its own directory.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tandem::testing {

// $TANDEM_TEST_WORK (set by CTest), else gtest's TempDir().
inline std::filesystem::path TestWork() {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  return (work != nullptr && *work != '\0') ? std::filesystem::path(work) : std::filesystem::path(::testing::TempDir());
}

// Where make_spm_fixture.py / make_byte_level_fixture.py wrote their output.
inline std::filesystem::path FixtureDir(std::string_view name) { return TestWork() / "tokenizer" / std::string(name); }

inline nlohmann::json ReadJsonFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str(), nullptr, false);
}

// An empty directory for the running test holding the given tokenizer.json
// (and tokenizer_config.json when `config` is non-empty) texts.
inline std::filesystem::path WriteTokenizerDir(const std::string& tokenizer_json, const std::string& config = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir =
      TestWork() / "tokenizer_scratch" / (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << tokenizer_json;
  if (!config.empty()) std::ofstream(dir / "tokenizer_config.json") << config;
  return dir;
}

inline std::vector<int32_t> Ids(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

// True when `s` is well-formed UTF-8 (no truncated or invalid sequence).
inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Loads a fixture tokenizer or fails the test (fixtures come from CTest's
// setup step; run the tests through ctest).
inline std::unique_ptr<Tokenizer> LoadFixture(std::string_view name) {
  auto tokenizer = Tokenizer::Load(FixtureDir(name));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status() << " (run through ctest so the fixture step runs first)";
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

}  // namespace tandem::testing
