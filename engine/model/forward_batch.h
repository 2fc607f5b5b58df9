// The input of one forward step: a flat batch of tokens from several
// sequences, each reading and writing its KV through a block table.
//
// There is no prefill or decode phase here: a sequence contributes
// `num_query_tokens` new tokens (a whole prompt, a prompt chunk, or one decode
// token) that attend to its first `context_len` positions, the new ones
// included. Plain value types; no thread-safety concerns.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem {

struct SequenceSlice {
  int32_t num_query_tokens = 0;  // this sequence's tokens in the flat batch (contiguous)
  int32_t context_len = 0;       // positions valid in KV after this step (>= num_query_tokens)
  std::vector<int32_t> block_table;  // [ceil(context_len / block_size)] block ids
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens] absolute position of each token
  std::vector<int64_t> slot_mapping;  // [num_tokens] block_id * block_size + offset to write K/V
  std::vector<SequenceSlice> seqs;    // in the order their tokens appear
  // Flat token indices whose logits the caller wants, in output row order
  // (usually each sequence's last token; every token for perplexity).
  std::vector<int32_t> logit_indices;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
};

}  // namespace tandem
