// Test helper: runs requests through an LlmEngine to completion and returns
// each request's generated tokens. Header-only; for tests.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "engine/core/llm_engine.h"

namespace tandem::testing {

struct DriverResult {
  std::vector<int32_t> token_ids;
  FinishReason finish_reason = FinishReason::kNone;
};

// Greedy request with ignore_eos and `max_tokens`.
inline EngineRequest GreedyRequest(std::string id, std::vector<int32_t> prompt, uint32_t max_tokens) {
  EngineRequest r;
  r.request_id = std::move(id);
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.ignore_eos = true;
  r.sampling.max_tokens = max_tokens;
  return r;
}

// Steps `engine` until no request is unfinished (bounded by `max_steps`).
inline absl::StatusOr<std::map<std::string, DriverResult>> RunToCompletion(LlmEngine& engine,
                                                                           int64_t max_steps = 100000) {
  std::map<std::string, DriverResult> results;
  for (int64_t step = 0; engine.HasUnfinishedRequests(); ++step) {
    if (step >= max_steps) return absl::DeadlineExceededError("engine did not finish");
    ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine.Step());
    for (const RequestOutput& o : outs) {
      DriverResult& r = results[o.request_id];
      r.token_ids.insert(r.token_ids.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) r.finish_reason = o.finish_reason;
    }
  }
  return results;
}

// Loads the model in `dir`, adds `requests`, runs them to completion.
// A small pool for tests (the production default sizes it from a memory budget).
inline EngineConfig TestEngineConfig() {
  EngineConfig c;
  c.num_kv_blocks = 256;
  return c;
}

inline absl::StatusOr<std::map<std::string, DriverResult>> Generate(const std::filesystem::path& dir,
                                                                    const std::vector<EngineRequest>& requests,
                                                                    const EngineConfig& config = TestEngineConfig()) {
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  for (const EngineRequest& r : requests) RETURN_IF_ERROR(engine->AddRequest(r));
  return RunToCompletion(*engine);
}

}  // namespace tandem::testing
