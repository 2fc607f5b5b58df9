// Synthetic benchmark datasets: prompts as token ids plus how many tokens to
// generate for each.
//
// Prompts are random token ids sent as GenerateRequest.prompt_token_ids, so
// prompt lengths are exact whatever the model's tokenizer (the server adds no
// BOS to token-id prompts). Ids are uniform in [kFirstTokenId, vocab_size):
// ids 0-2 are skipped because many vocabularies put unk/bos/eos/pad there, and
// the default vocab_size of 2000 stays below the bundled model's specials
// (2045-2047 of 2048).
//
//   random        input_len and output_len each fixed or uniform in [min, max].
//   sharegpt-like lengths drawn from log-normals resembling ShareGPT's
//                 conversations (see kShareGpt* below), clamped to max_model_len.
//   prefix        prefix_len ids shared by every prompt (drawn once), then a
//                 random suffix of input_len ids (fixed or ranged); with
//                 num_prefixes K > 1, K such prefixes and each prompt starts
//                 with one of them, equally likely (several system prompts).
//   multi-turn    conversations of num_turns turns: turn 0's prompt is a
//                 prefix (as above; none by default) and a message of
//                 input_len ids; each later turn's prompt is the whole
//                 conversation so far (the previous turn's prompt and the
//                 output the server gave it) and a new message. The
//                 dataset holds each turn's new message; the load runner
//                 builds the prompt once the previous turn has finished.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::bench {

enum class DatasetKind { kRandom, kShareGptLike, kPrefix, kMultiTurn };

// "random" | "sharegpt-like" | "prefix" | "multi-turn" -> kind; InvalidArgument otherwise.
absl::StatusOr<DatasetKind> ParseDatasetKind(const std::string& name);
const char* DatasetKindName(DatasetKind kind);

// An inclusive integer range; min == max is a fixed value.
struct LengthRange {
  int64_t min = 0;
  int64_t max = 0;
  bool operator==(const LengthRange&) const = default;
};

// "N" -> [N, N]; "A:B" -> [A, B]. InvalidArgument unless 0 <= A <= B.
absl::StatusOr<LengthRange> ParseLengthRange(const std::string& text);

inline constexpr uint32_t kFirstTokenId = 3;

// ShareGPT-like lengths: log-normal(mu = ln(median), sigma). The medians and
// spreads give means of about 160 prompt and 340 output tokens and the long
// right tails of ShareGPT conversations under a Llama tokenizer (the figures
// commonly reported for vLLM's ShareGPT benchmark). Then, like vLLM's filter
// (prompt >= 4 tokens), prompt = clamp(x, 4, max_model_len - 1) and
// output = clamp(y, 1, max_model_len - prompt).
inline constexpr double kShareGptInputMedian = 80.0;
inline constexpr double kShareGptInputSigma = 1.18;
inline constexpr double kShareGptOutputMedian = 200.0;
inline constexpr double kShareGptOutputSigma = 1.03;
inline constexpr int64_t kShareGptMinInput = 4;

struct DatasetConfig {
  DatasetKind kind = DatasetKind::kRandom;
  // random: prompt length; prefix: suffix length after the shared prefix.
  LengthRange input_len{128, 128};
  // random, prefix: tokens to generate (max_tokens).
  LengthRange output_len{64, 64};
  // When not empty, replaces output_len: each request's output length is one
  // of these, equally likely (e.g. 64, 128, 256 as in the batching ladder).
  std::vector<int64_t> output_len_choices;
  // prefix: ids shared by every prompt (of its prefix group).
  int64_t prefix_len = 0;
  // prefix: distinct prefixes; each request draws one uniformly
  // (multi-turn: each conversation).
  int64_t num_prefixes = 1;
  // multi-turn: turns per conversation (>= 2).
  int64_t num_turns = 1;
  // Prompt ids are drawn from [kFirstTokenId, vocab_size).
  int64_t vocab_size = 2000;
  // The server's context length: prompt + output must fit.
  int64_t max_model_len = 256;

  // InvalidArgument when a request could not fit max_model_len, a length is
  // out of range, or the vocabulary is empty.
  absl::Status Validate() const;
};

struct BenchRequest {
  // multi-turn, turns after the first: only the new message (the runner
  // sends the conversation so far before it).
  std::vector<uint32_t> prompt_token_ids;
  int64_t output_len = 0;  // sent as sampling.max_tokens
  int64_t conversation = -1;  // multi-turn: which conversation (-1: none)
  int64_t turn = 0;           // multi-turn: 0, 1, ... within it
};

// `n` requests, deterministic per (config, seed). Requests are drawn one after
// another from one stream, so the first k of a larger draw equal a draw of k
// (the benchmark takes its warmup requests from the end). multi-turn: request
// i is turn i % num_turns of conversation i / num_turns. Requires
// config.Validate().ok().
std::vector<BenchRequest> GenerateDataset(const DatasetConfig& config, int64_t n, uint64_t seed);

}  // namespace tandem::bench
