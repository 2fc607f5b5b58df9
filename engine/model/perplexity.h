// Perplexity of a model over a token sequence, the yardstick every
// precision and quantization scheme is judged by (`tandem perplexity`).
//
// The tokens are cut into consecutive, non-overlapping windows of
// `context` tokens (the last one may be shorter). Each window runs from an
// empty KV cache, and every token of a window but its first is scored:
// NLL_i = -log softmax(logits at i-1)[token i], the log-softmax taken in
// float64 from the fp32 logits. Perplexity = exp(mean NLL over every scored
// token). A window of one token scores nothing (and is still counted).
// This is the non-overlapping evaluation of llama.cpp's `perplexity` tool
// and of HF's guide with stride = context (no token is scored twice, and
// the first tokens of a window see less context than the last).
//
// The model runs directly (no scheduler): each window is fed through the
// paged KV cache in steps of at most `step_tokens` tokens, with the logits of
// every token asked for, so the logits held at once are step_tokens x vocab.
// Thread-safety: Compute calls model.Forward, which is not re-entrant: one
// computation per model at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/kv_cache.h"
#include "engine/model/llama_model.h"

namespace tandem {

struct PerplexityOptions {
  int64_t context = 512;      // tokens per window (>= 2; at most the model's max_position_embeddings)
  int64_t step_tokens = 256;  // tokens per Forward step inside a window
  int64_t block_size = 16;    // KV block size of the cache the windows use
  DType kv_dtype = DType::kF32;
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;  // nats per scored token
  int64_t scored_tokens = 0;
  int64_t windows = 0;
};

// InvalidArgument for an option out of range, fewer than two tokens, or a
// token outside the vocabulary (naming its index).
absl::StatusOr<PerplexityResult> ComputePerplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                                   const PerplexityOptions& options);

}  // namespace tandem
