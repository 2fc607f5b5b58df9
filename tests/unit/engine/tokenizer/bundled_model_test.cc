// The tokenizer shipped with the bundled model (models/tandem-shakespeare),
// when it is present: it loads and round-trips the held-out text. Its speed
// is measured by bench/kernels/tokenizer_bench.cc.
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem {
namespace {

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("TANDEM_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

std::filesystem::path SharedText() {
  const char* data = std::getenv("TANDEM_SHARED_DATA");
  return std::filesystem::path(data != nullptr ? data : "") / "tinyshakespeare.txt";
}

std::string HeldOutText() {
  std::ifstream in(SharedText());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  // The last 10% of the lines, as the fixture scripts and the model use.
  size_t lines = 0;
  for (char c : text) lines += c == '\n';
  const size_t cut = (lines + 1) * 9 / 10;
  size_t pos = 0;
  for (size_t n = 0; n < cut && pos != std::string::npos; ++n) pos = text.find('\n', pos) + 1;
  return pos == std::string::npos ? "" : text.substr(pos);
}

TEST(BundledModelTokenizerTest, RoundTripsHeldOutText) {
  const std::filesystem::path dir = SourceDir() / "models" / "tandem-shakespeare";
  if (!std::filesystem::exists(dir / "tokenizer.json")) GTEST_SKIP() << "no bundled model at " << dir;
  if (!std::filesystem::exists(SharedText())) {
    GTEST_SKIP() << "no " << SharedText() << " (the shared data folder; set TANDEM_SHARED_DATA)";
  }
  auto tok = Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = HeldOutText();
  ASSERT_GT(text.size(), 50000u);
  const std::vector<int32_t> ids = (*tok)->Encode(text, /*add_special_tokens=*/false);
  EXPECT_EQ((*tok)->Decode(ids, /*skip_special_tokens=*/false), text);
  EXPECT_LT(ids.size(), text.size() / 2) << "BPE should compress Shakespeare";
  for (int32_t id : ids) ASSERT_LT(id, (*tok)->vocab_size());
  EXPECT_TRUE((*tok)->eos_id().has_value());
}

}  // namespace
}  // namespace tandem
