#include "engine/core/model_runner.h"

#include <span>

#include "common/status_macros.h"

namespace tandem {

ModelRunner::ModelRunner(ModelExecutor* model, const KvCacheManager* kv) : model_(model), kv_(kv) {}

ForwardBatch ModelRunner::BuildBatch(const SchedulerOutput& plan) const {
  ForwardBatch b;
  const int64_t bs = kv_->block_size();
  for (const ScheduledSequence& s : plan.scheduled) {
    const Sequence& seq = *s.seq;
    const std::span<const BlockId> table = kv_->BlockTable(seq.id);
    const int64_t start = seq.num_computed_tokens;
    const int64_t end = start + s.num_new_tokens;
    for (int64_t pos = start; pos < end; ++pos) {
      b.token_ids.push_back(seq.tokens[pos]);
      b.positions.push_back(static_cast<int32_t>(pos));
      b.slot_mapping.push_back(static_cast<int64_t>(table[pos / bs].value()) * bs + pos % bs);
    }
    SequenceSlice slice;
    slice.num_query_tokens = static_cast<int32_t>(s.num_new_tokens);
    slice.context_len = static_cast<int32_t>(end);
    slice.block_table.reserve(table.size());
    for (BlockId id : table) slice.block_table.push_back(id.value());
    b.seqs.push_back(std::move(slice));
    if (end == seq.num_tokens()) b.logit_indices.push_back(b.num_tokens() - 1);
  }
  return b;
}

absl::StatusOr<std::vector<StepSample>> ModelRunner::Run(const SchedulerOutput& plan, LayerKvListener* listener) {
  std::vector<StepSample> samples;
  if (plan.scheduled.empty()) return samples;
  const ForwardBatch batch = BuildBatch(plan);
  ASSIGN_OR_RETURN(std::vector<float> logits, model_->Forward(batch, listener));
  const int64_t vocab = model_->config().vocab_size;
  // Logit row k belongs to the k-th sequence that finished its tokens.
  for (const ScheduledSequence& s : plan.scheduled) {
    if (s.seq->num_computed_tokens + s.num_new_tokens == s.seq->num_tokens()) samples.push_back({s.seq, {}});
  }
  // Sequences sample in parallel: each sampler owns its random stream and
  // touches only its own row, so the tokens do not depend on the threads.
  const int64_t num_rows = static_cast<int64_t>(samples.size());
#pragma omp parallel for schedule(dynamic) if (num_rows >= 2)
  for (int64_t k = 0; k < num_rows; ++k) {
    std::span<float> r(logits.data() + k * vocab, static_cast<size_t>(vocab));
    samples[k].token = samples[k].seq->sampler.Sample(r);
  }
  return samples;
}

}  // namespace tandem
