// Shared helpers for the LlmEngine tests (llm_engine_*_test.cc, all in the
// llm_engine_test binary). They run LlmEngine end to end on the tiny
// random-weight reference models (written by the `reference_fixtures` CTest
// fixture into $TANDEM_TEST_WORK/reference) and on the bundled
// tandem-shakespeare model (stop strings).
//
// Every token assertion is exact: against the float64 reference's greedy
// tokens (expected.json), or against the same request run alone in a fresh
// engine with a large pool. The engine must give a request the same tokens
// however its prompt is computed (whole, in chunks, partly from the prefix
// cache, recomputed after preemption, or in another engine) and whatever
// shares its batch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/llm_engine.h"
#include "gtest/gtest.h"
#include "tests/testing/assert_ok.h"
#include "tests/testing/engine_driver.h"

namespace tandem::llm_engine_test {

using testing::DriverResult;
using testing::GreedyRequest;

// The main test model: 2 layers, 4:1 GQA, vocab 320, eos 2.
inline constexpr char kShape[] = "llama_gqa_f32";

std::filesystem::path WorkDir();
std::filesystem::path ModelDir(const std::string& shape);
std::filesystem::path BundledModelDir();

struct RefCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // 32 greedy tokens, eos ignored
};

// The reference cases of `shape` (its expected.json).
std::vector<RefCase> LoadCases(const std::string& shape);

absl::StatusOr<std::unique_ptr<LlmEngine>> NewEngine(const std::filesystem::path& dir, const EngineConfig& config);

EngineConfig Config(int32_t block_size, int64_t num_blocks, int64_t budget = 2048);

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int32_t length, int32_t vocab);

EngineRequest SeededRequest(std::string id, std::vector<int32_t> prompt, uint32_t max_tokens, uint64_t seed);

// The request alone in a fresh engine with a large pool (256 blocks of 16).
DriverResult Alone(const std::string& shape, const EngineRequest& request);

// What a whole run looked like (for shape assertions beyond the tokens).
struct Trace {
  std::map<std::string, DriverResult> results;
  int64_t num_steps = 0;
  int32_t max_running = 0;
  int32_t max_seqs_in_step = 0;
  int64_t max_tokens_in_step = 0;
  std::map<std::string, int64_t> first_token_step;  // 1-based step of the first token
};

// Steps until nothing is unfinished, checking the block manager's invariants
// and the pool's accounting after every step. `before_step(step)` may add or
// abort requests.
Trace Drive(LlmEngine& engine, const std::function<void(int64_t)>& before_step = nullptr,
            int64_t max_steps = 20000, int64_t run_at_least = 0);

// Nothing running, waiting, prefilled or awaiting KV; every block free.
void ExpectPoolEmpty(const LlmEngine& engine);

}  // namespace tandem::llm_engine_test
