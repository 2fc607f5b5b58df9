#include "engine/core/static_generator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

// One request's progress inside the static batch.
struct LiveSequence {
  const GenerationRequest* request = nullptr;
  std::vector<int32_t> block_table;
  std::vector<int32_t> tokens;  // prompt + generated so far
  SequenceSampler sampler;
  GenerationResult result;
  bool finished = false;
};

bool IsStop(const LiveSequence& s, int32_t token, const ModelConfig& config) {
  const SamplingParams& p = s.request->sampling;
  if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end()) {
    return true;
  }
  return !p.ignore_eos &&
         std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), token) !=
             config.eos_token_ids.end();
}

// Appends `count` tokens of `s`, starting at position `start`, to the batch.
void AddTokens(ForwardBatch& b, const LiveSequence& s, int32_t start, int32_t count,
               int64_t block_size) {
  for (int32_t pos = start; pos < start + count; ++pos) {
    b.token_ids.push_back(s.tokens[pos]);
    b.positions.push_back(pos);
    b.slot_mapping.push_back(static_cast<int64_t>(s.block_table[pos / block_size]) * block_size +
                             pos % block_size);
  }
  b.seqs.push_back({count, start + count, s.block_table});
  b.logit_indices.push_back(b.num_tokens() - 1);
}

}  // namespace

const char* FinishReasonName(FinishReason r) { return r == FinishReason::kStop ? "stop" : "length"; }

absl::StatusOr<std::vector<GenerationResult>> GenerateStatic(
    LlamaModel& model, std::span<const GenerationRequest> requests,
    const StaticGeneratorOptions& options) {
  const ModelConfig& config = model.config();
  const int64_t bs = options.block_size;
  std::vector<LiveSequence> seqs;
  seqs.reserve(requests.size());
  int32_t next_block = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    if (r.prompt_token_ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": empty prompt"));
    }
    if (absl::Status st = r.sampling.Validate(); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": ", st.message()));
    }
    const int64_t total = static_cast<int64_t>(r.prompt_token_ids.size()) + r.sampling.max_tokens;
    if (total > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", i, ": prompt (", r.prompt_token_ids.size(), " tokens) + max_tokens (",
          r.sampling.max_tokens, ") exceeds the model's context of ", config.max_position_embeddings));
    }
    for (int32_t id : r.prompt_token_ids) {
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("request ", i, ": prompt token id ", id,
                                                       " outside the vocabulary of ", config.vocab_size));
      }
    }
    LiveSequence s{&r, {}, r.prompt_token_ids,
                   SequenceSampler(r.sampling, r.prompt_token_ids, options.fallback_seed + i), {}, false};
    const int64_t num_blocks = (total + bs - 1) / bs;
    for (int64_t b = 0; b < num_blocks; ++b) s.block_table.push_back(next_block++);
    seqs.push_back(std::move(s));
  }
  KvCache cache(model.MakeKvCacheShape(next_block, bs));

  // Step 0 prefills every prompt; each later step decodes one token per live sequence.
  bool first_step = true;
  const uint32_t max_steps = std::max_element(requests.begin(), requests.end(), [](auto& a, auto& b) {
                               return a.sampling.max_tokens < b.sampling.max_tokens;
                             })->sampling.max_tokens;
  for (uint32_t step = 0; step < max_steps; ++step) {
    ForwardBatch batch;
    std::vector<LiveSequence*> in_batch;
    for (LiveSequence& s : seqs) {
      if (s.finished) continue;
      const int32_t len = static_cast<int32_t>(s.tokens.size());
      if (first_step) {
        AddTokens(batch, s, 0, len, bs);
      } else {
        AddTokens(batch, s, len - 1, 1, bs);
      }
      in_batch.push_back(&s);
    }
    if (in_batch.empty()) break;
    first_step = false;
    ASSIGN_OR_RETURN(std::vector<float> logits, model.Forward(batch, cache));
    const int64_t vocab = config.vocab_size;
    for (size_t i = 0; i < in_batch.size(); ++i) {
      LiveSequence& s = *in_batch[i];
      SampledToken t = s.sampler.Sample(std::span<float>(logits.data() + i * vocab, vocab));
      s.tokens.push_back(t.token_id);
      s.result.token_ids.push_back(t.token_id);
      s.result.samples.push_back(std::move(t));
      if (IsStop(s, s.tokens.back(), config)) {
        s.finished = true;
        s.result.finish_reason = FinishReason::kStop;
      } else if (s.result.token_ids.size() >= s.request->sampling.max_tokens) {
        s.finished = true;
        s.result.finish_reason = FinishReason::kLength;
      }
    }
  }
  std::vector<GenerationResult> results;
  for (LiveSequence& s : seqs) results.push_back(std::move(s.result));
  return results;
}

}  // namespace tandem
