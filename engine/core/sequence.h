// Sequence: one request's tokens, sampling state and progress inside an
// engine. The block table lives in KvCacheManager, keyed by `id`.
//
// Progress is one counter chasing another (vLLM v1's idea): the scheduler
// gives a sequence `num_tokens() - num_computed_tokens` new tokens, split over
// steps when the token budget is short (chunked prefill). There is no
// "prefill phase" or "decode phase" in the state.
// Thread-safety: owned by the engine loop; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/ids.h"
#include "engine/sampler/sampler.h"
#include "engine/sampler/sampling_params.h"

namespace tandem {

enum class SequenceStatus {
  kWaiting,      // queued for admission (new, or preempted and to be recomputed)
  kAwaitingKv,   // blocks reserved; KV is being written from outside (disaggregation)
  kRunning,      // admitted: scheduled every step until it finishes
  kPrefilled,    // prefill-only sequence done: blocks held until released
  kFinished,     // done; resources released
};

enum class FinishReason { kNone, kLength, kStop, kAborted };

// "length" / "stop" / "abort" / "" (not finished).
const char* FinishReasonName(FinishReason r);

struct Sequence {
  Sequence(SeqId id, std::string request_id, std::vector<int32_t> prompt, SamplingParams params,
           int32_t priority, uint64_t arrival_order, uint64_t fallback_seed)
      : id(id),
        request_id(std::move(request_id)),
        tokens(std::move(prompt)),
        num_prompt_tokens(static_cast<int32_t>(tokens.size())),
        params(std::move(params)),
        priority(priority),
        arrival_order(arrival_order),
        sampler(this->params, std::span<const int32_t>(tokens), fallback_seed) {}

  const SeqId id;
  const std::string request_id;
  std::vector<int32_t> tokens;  // prompt then generated
  const int32_t num_prompt_tokens;
  const SamplingParams params;
  const int32_t priority;        // lower runs first under the priority policy
  const uint64_t arrival_order;  // engine-wide admission order (FCFS, preemption victim)
  SequenceSampler sampler;

  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_computed_tokens = 0;  // tokens whose KV is in the cache
  int32_t num_preemptions = 0;
  int64_t waiting_steps = 0;        // steps spent waiting since arrival or preemption (aging)
  bool prefill_only = false;        // stop after the first sampled token, keep blocks
  std::vector<SampledToken> samples;  // one per generated token (logprobs)
  // Metrics only (queue time): when it became schedulable (added, or its KV
  // arrived from outside), and whether a step has computed it yet.
  std::chrono::steady_clock::time_point runnable_since = std::chrono::steady_clock::now();
  bool ever_scheduled = false;

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int32_t num_output_tokens() const { return static_cast<int32_t>(tokens.size()) - num_prompt_tokens; }
  std::span<const int32_t> output_tokens() const {
    return std::span<const int32_t>(tokens).subspan(num_prompt_tokens);
  }
  bool finished() const { return status == SequenceStatus::kFinished; }
};

}  // namespace tandem
