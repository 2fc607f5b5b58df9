// Shared helpers for the LlmEngine tests: see llm_engine_test_util.h.
#include "tests/unit/engine/core/llm_engine_test_util.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "common/status_macros.h"
#include "engine/model/llama_model.h"
#include "nlohmann/json.hpp"

namespace tandem::llm_engine_test {

std::filesystem::path WorkDir() {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  return std::filesystem::path(work ? work : "build/test_work");
}
std::filesystem::path ModelDir(const std::string& shape) { return WorkDir() / "reference" / shape / "model"; }
std::filesystem::path BundledModelDir() {
  const char* src = std::getenv("TANDEM_SOURCE_DIR");
  return std::filesystem::path(src ? src : ".") / "models" / "tandem-shakespeare";
}

std::vector<RefCase> LoadCases(const std::string& shape) {
  std::ifstream in(WorkDir() / "reference" / shape / "expected.json");
  EXPECT_TRUE(in.good()) << "missing fixture for " << shape << " (run the reference_fixtures test)";
  if (!in.good()) return {};
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<RefCase> cases;
  for (const auto& c : j["cases"]) {
    cases.push_back({c["prompt_token_ids"].get<std::vector<int32_t>>(), c["token_ids"].get<std::vector<int32_t>>()});
  }
  return cases;
}

absl::StatusOr<std::unique_ptr<LlmEngine>> NewEngine(const std::filesystem::path& dir, const EngineConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir));
  return LlmEngine::Create(std::move(model), config);
}

EngineConfig Config(int32_t block_size, int64_t num_blocks, int64_t budget) {
  EngineConfig c;
  c.block_size = block_size;
  c.num_kv_blocks = num_blocks;
  c.scheduler.max_num_batched_tokens = budget;
  return c;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int32_t length, int32_t vocab) {
  std::uniform_int_distribution<int32_t> tok(3, vocab - 1);  // avoid bos / eos ids
  std::vector<int32_t> p(static_cast<size_t>(length));
  for (int32_t& t : p) t = tok(rng);
  return p;
}

EngineRequest SeededRequest(std::string id, std::vector<int32_t> prompt, uint32_t max_tokens, uint64_t seed) {
  EngineRequest r = GreedyRequest(std::move(id), std::move(prompt), max_tokens);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = seed;
  return r;
}

DriverResult Alone(const std::string& shape, const EngineRequest& request) {
  auto results = testing::Generate(ModelDir(shape), {request});
  EXPECT_TRUE(results.ok()) << results.status();
  if (!results.ok()) return {};
  return results->at(request.request_id);
}

Trace Drive(LlmEngine& engine, const std::function<void(int64_t)>& before_step, int64_t max_steps,
            int64_t run_at_least) {
  Trace t;
  for (int64_t step = 0; step < run_at_least || engine.HasUnfinishedRequests(); ++step) {
    if (step >= max_steps) {
      ADD_FAILURE() << "engine did not finish in " << max_steps << " steps";
      break;
    }
    if (before_step) before_step(step);
    auto outs = engine.Step();
    EXPECT_TRUE(outs.ok()) << outs.status();
    if (!outs.ok()) break;
    ++t.num_steps;
    const EngineStats s = engine.Stats();
    EXPECT_TRUE(engine.kv_manager().CheckInvariants().ok()) << engine.kv_manager().CheckInvariants();
    EXPECT_EQ(s.kv.num_used_blocks + s.kv.num_free_blocks, s.kv.num_blocks);
    t.max_running = std::max(t.max_running, s.num_running);
    t.max_seqs_in_step = std::max(t.max_seqs_in_step, s.last_step_num_seqs);
    t.max_tokens_in_step = std::max(t.max_tokens_in_step, s.last_step_num_tokens);
    for (const RequestOutput& o : *outs) {
      EXPECT_LE(o.new_token_ids.size(), 1u);
      DriverResult& r = t.results[o.request_id];
      if (r.token_ids.empty() && !o.new_token_ids.empty()) t.first_token_step[o.request_id] = t.num_steps;
      EXPECT_EQ(r.finish_reason, FinishReason::kNone) << o.request_id << " produced output after finishing";
      r.token_ids.insert(r.token_ids.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) r.finish_reason = o.finish_reason;
    }
  }
  return t;
}

void ExpectPoolEmpty(const LlmEngine& engine) {
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.num_waiting, 0);
  EXPECT_EQ(s.num_awaiting_kv, 0);
  EXPECT_EQ(s.num_prefilled, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 0);
  EXPECT_EQ(s.kv.num_free_blocks, s.kv.num_blocks);
  EXPECT_TRUE(engine.kv_manager().CheckInvariants().ok());
}

}  // namespace tandem::llm_engine_test
