#include "engine/model/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

// -log softmax(row)[target] in float64.
double Nll(const float* row, int64_t vocab, int32_t target) {
  double max = row[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max(max, static_cast<double>(row[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
  return -(static_cast<double>(row[target]) - max - std::log(sum));
}

}  // namespace

absl::StatusOr<PerplexityResult> ComputePerplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                                   const PerplexityOptions& options) {
  const ModelConfig& config = model.config();
  if (options.context < 2) return absl::InvalidArgumentError("the context must be at least 2 tokens");
  if (options.context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("the context (", options.context,
                                                   ") exceeds the model's max_position_embeddings (",
                                                   config.max_position_embeddings, ")"));
  }
  if (options.step_tokens < 1 || options.block_size < 1) {
    return absl::InvalidArgumentError("step_tokens and block_size must be positive");
  }
  if (tokens.size() < 2) return absl::InvalidArgumentError("perplexity needs at least 2 tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " (id ", tokens[i], ") is outside the vocabulary"));
    }
  }
  const int64_t vocab = config.vocab_size;
  const int64_t num_blocks = (options.context + options.block_size - 1) / options.block_size;
  KvCache cache(model.MakeKvCacheShape(num_blocks, options.block_size, options.kv_dtype));
  std::vector<int32_t> block_table(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) block_table[static_cast<size_t>(b)] = static_cast<int32_t>(b);

  PerplexityResult result;
  double nll_sum = 0;
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t start = 0; start < n; start += options.context) {
    const int64_t len = std::min(options.context, n - start);
    ++result.windows;
    // The window's positions 0..len-1 sit in blocks 0.. of the cache: each
    // step writes its own slots and reads what earlier steps wrote, so the
    // previous window's K/V is never read (every read slot is rewritten first).
    for (int64_t done = 0; done < len; done += options.step_tokens) {
      const int64_t step = std::min(options.step_tokens, len - done);
      ForwardBatch b;
      for (int64_t i = 0; i < step; ++i) {
        const int64_t pos = done + i;
        b.token_ids.push_back(tokens[static_cast<size_t>(start + pos)]);
        b.positions.push_back(static_cast<int32_t>(pos));
        b.slot_mapping.push_back(pos);  // identity block table: slot = position
        b.logit_indices.push_back(static_cast<int32_t>(i));
      }
      SequenceSlice s;
      s.num_query_tokens = static_cast<int32_t>(step);
      s.context_len = static_cast<int32_t>(done + step);
      s.block_table.assign(block_table.begin(),
                           block_table.begin() + (done + step + options.block_size - 1) / options.block_size);
      b.seqs.push_back(std::move(s));
      absl::StatusOr<std::vector<float>> logits = model.Forward(b, cache);
      if (!logits.ok()) return logits.status();
      // Row i predicts the token after position done + i.
      for (int64_t i = 0; i < step; ++i) {
        const int64_t next = done + i + 1;
        if (next >= len) break;
        nll_sum += Nll(logits->data() + i * vocab, vocab, tokens[static_cast<size_t>(start + next)]);
        ++result.scored_tokens;
      }
    }
  }
  if (result.scored_tokens == 0) {
    return absl::InvalidArgumentError("no token was scored (every window holds a single token)");
  }
  result.mean_nll = nll_sum / static_cast<double>(result.scored_tokens);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace tandem
