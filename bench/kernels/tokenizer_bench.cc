// Tokenizer speed (kept out of the unit tests, which check behaviour only):
//
//  - BM_TokenizerEncode/<dir>: Tokenizer::Encode of a whole text file, for
//    each tokenizer directory in TANDEM_BENCH_TOKENIZER (comma-separated, e.g.
//    models/tandem-shakespeare and the byte-level fixtures the unit tests
//    write under build/test_work/tokenizer/byte_level/) on the file
//    TANDEM_BENCH_TEXT (e.g. ../shared/data/tinyshakespeare.txt). Registered
//    only when both are set.
//  - BM_SplitRegex/<pattern>/<input>: the pre-tokenizer regex alone (GPT-2's
//    and Llama-3's patterns) on TANDEM_BENCH_TEXT when set, and on hostile
//    inputs: half a megabyte of one character class, and alternating
//    " !" (a match every character). Their bytes/s staying near the
//    text's shows the work is linear in the input.
// Thread-safety: benchmark thread only.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "engine/tokenizer/split_regex.h"
#include "engine/tokenizer/tokenizer.h"

namespace tandem::bench {
namespace {

constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void BM_TokenizerEncode(benchmark::State& state, std::string dir, std::string text) {
  auto tokenizer = Tokenizer::Load(dir);
  if (!tokenizer.ok()) {
    state.SkipWithError(std::string(tokenizer.status().message()).c_str());
    return;
  }
  size_t ids = 0;
  for (auto _ : state) {
    auto encoded = (*tokenizer)->TryEncode(text, /*add_special_tokens=*/false);
    if (!encoded.ok()) {
      state.SkipWithError(std::string(encoded.status().message()).c_str());
      return;
    }
    ids = encoded->size();
    benchmark::DoNotOptimize(encoded->data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["ids"] = static_cast<double>(ids);
}

void BM_SplitRegex(benchmark::State& state, std::string pattern, std::string text) {
  auto regex = tokenizer_internal::SplitRegex::Create(pattern);
  if (!regex.ok()) {
    state.SkipWithError(std::string(regex.status().message()).c_str());
    return;
  }
  std::vector<std::pair<size_t, size_t>> matches;
  for (auto _ : state) {
    matches.clear();
    if (absl::Status status = (*regex)->FindMatches(text, &matches); !status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(matches.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["matches"] = static_cast<double>(matches.size());
}

const bool kRegistered = [] {
  const char* text_path = std::getenv("TANDEM_BENCH_TEXT");
  const std::string text = text_path != nullptr ? ReadFile(text_path) : "";
  const char* dirs = std::getenv("TANDEM_BENCH_TOKENIZER");
  if (dirs != nullptr && !text.empty()) {
    for (absl::string_view dir : absl::StrSplit(dirs, ',', absl::SkipEmpty())) {
      const std::filesystem::path path(std::string(dir.data(), dir.size()));
      const std::string name = path.parent_path().filename().string() + "/" + path.filename().string();
      benchmark::RegisterBenchmark(("BM_TokenizerEncode/" + name).c_str(), BM_TokenizerEncode, path.string(), text)
          ->Unit(benchmark::kMillisecond);
    }
  }
  constexpr size_t kRun = 512 * 1024;
  std::vector<std::pair<std::string, std::string>> inputs;
  if (!text.empty()) inputs.emplace_back("text", text);
  inputs.emplace_back("spaces_then_x", std::string(kRun, ' ') + "x");
  inputs.emplace_back("newlines", std::string(kRun, '\n'));
  inputs.emplace_back("letters", std::string(kRun, 'a'));
  inputs.emplace_back("digits", std::string(kRun, '7'));
  inputs.emplace_back("punctuation", std::string(kRun, '!'));
  std::string alternating;
  while (alternating.size() < kRun) alternating += " !";
  inputs.emplace_back("space_bang", std::move(alternating));
  for (const auto& [pattern_name, pattern] : {std::pair{"gpt2", kGpt2Pattern}, std::pair{"llama3", kLlama3Pattern}}) {
    for (const auto& [input_name, input] : inputs) {
      benchmark::RegisterBenchmark(("BM_SplitRegex/" + std::string(pattern_name) + "/" + input_name).c_str(),
                                   BM_SplitRegex, std::string(pattern), input)
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
