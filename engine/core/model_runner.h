// ModelRunner: turns a step's plan into the model's flat batch (token ids,
// positions, slot mapping, block tables), runs the forward pass, and samples
// the next token of every sequence whose computed tokens reach its end.
// Thread-safety: owned by the engine loop; not thread-safe.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/model_executor.h"
#include "engine/core/scheduler.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/model/llama_model.h"

namespace tandem {

// A token sampled for one sequence in one step.
struct StepSample {
  Sequence* seq = nullptr;
  SampledToken token;
};

class ModelRunner {
 public:
  // `model` and `kv` must outlive the runner.
  ModelRunner(ModelExecutor* model, const KvCacheManager* kv);

  // The flat batch of `plan` (exposed for tests). Logits are requested for the
  // scheduled sequences whose computed tokens reach num_tokens() this step.
  ForwardBatch BuildBatch(const SchedulerOutput& plan) const;

  // Runs the step and samples. Does not advance num_computed_tokens (the
  // engine does, after bookkeeping). Errors come from the model.
  // `listener` (may be null) hears each layer's K/V being written.
  absl::StatusOr<std::vector<StepSample>> Run(const SchedulerOutput& plan, LayerKvListener* listener = nullptr);

 private:
  ModelExecutor* const model_;
  const KvCacheManager* const kv_;
};

}  // namespace tandem
