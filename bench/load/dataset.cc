#include "bench/load/dataset.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/load/rng.h"

namespace tandem::bench {
namespace {

void AppendRandomIds(Rng& rng, int64_t count, int64_t vocab_size, std::vector<uint32_t>* out) {
  for (int64_t i = 0; i < count; ++i) {
    out->push_back(static_cast<uint32_t>(rng.UniformInt(kFirstTokenId, vocab_size - 1)));
  }
}

int64_t Draw(Rng& rng, const LengthRange& r) {
  return r.min == r.max ? r.min : rng.UniformInt(r.min, r.max);
}

}  // namespace

absl::StatusOr<DatasetKind> ParseDatasetKind(const std::string& name) {
  if (name == "random") return DatasetKind::kRandom;
  if (name == "sharegpt-like") return DatasetKind::kShareGptLike;
  if (name == "prefix") return DatasetKind::kPrefix;
  if (name == "multi-turn") return DatasetKind::kMultiTurn;
  return absl::InvalidArgumentError(
      absl::StrCat("--dataset: '", name, "' is not one of random, sharegpt-like, prefix, multi-turn"));
}

const char* DatasetKindName(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kRandom: return "random";
    case DatasetKind::kShareGptLike: return "sharegpt-like";
    case DatasetKind::kPrefix: return "prefix";
    case DatasetKind::kMultiTurn: return "multi-turn";
  }
  return "?";
}

absl::StatusOr<LengthRange> ParseLengthRange(const std::string& text) {
  LengthRange r;
  const size_t colon = text.find(':');
  const bool ok = colon == std::string::npos
                      ? absl::SimpleAtoi(text, &r.min) && (r.max = r.min, true)
                      : absl::SimpleAtoi(text.substr(0, colon), &r.min) &&
                            absl::SimpleAtoi(text.substr(colon + 1), &r.max);
  if (!ok || r.min < 0 || r.min > r.max) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not N or A:B with 0 <= A <= B"));
  }
  return r;
}

absl::Status DatasetConfig::Validate() const {
  if (vocab_size <= kFirstTokenId) {
    return absl::InvalidArgumentError(absl::StrCat("--vocab-size must be > ", kFirstTokenId, ", got ", vocab_size));
  }
  if (kind == DatasetKind::kShareGptLike) {
    if (max_model_len < kShareGptMinInput + 1) {
      return absl::InvalidArgumentError(absl::StrCat("--max-model-len must be >= ", kShareGptMinInput + 1,
                                                     " for sharegpt-like, got ", max_model_len));
    }
    return absl::OkStatus();
  }
  const bool prefixed = kind == DatasetKind::kPrefix || kind == DatasetKind::kMultiTurn;
  if (prefix_len < 0 || (!prefixed && prefix_len != 0)) {
    return absl::InvalidArgumentError("--prefix-len needs --dataset prefix or multi-turn and must be >= 0");
  }
  if (num_prefixes < 1 || num_prefixes > 100000 || (num_prefixes > 1 && (!prefixed || prefix_len < 1))) {
    return absl::InvalidArgumentError(
        "--num-prefixes must be in [1, 100000]; above 1 it needs --dataset prefix or multi-turn and --prefix-len >= 1");
  }
  if (kind == DatasetKind::kMultiTurn ? (num_turns < 2 || num_turns > 1000) : num_turns != 1) {
    return absl::InvalidArgumentError("--num-turns needs --dataset multi-turn and must be in [2, 1000]");
  }
  int64_t min_output = output_len.min, max_output = output_len.max;
  if (!output_len_choices.empty()) {
    min_output = *std::min_element(output_len_choices.begin(), output_len_choices.end());
    max_output = *std::max_element(output_len_choices.begin(), output_len_choices.end());
  }
  if (min_output < 1) return absl::InvalidArgumentError("output lengths must be >= 1");
  if (prefix_len + input_len.min < 1) return absl::InvalidArgumentError("prompt lengths must be >= 1");
  if (kind == DatasetKind::kMultiTurn && input_len.min < 1) {
    return absl::InvalidArgumentError("multi-turn: every turn's message needs --input-len >= 1");
  }
  // multi-turn: the last turn's prompt holds every earlier turn's message and output.
  const int64_t longest_prompt = prefix_len + num_turns * input_len.max + (num_turns - 1) * max_output;
  if (longest_prompt + max_output > max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("the longest request (prompt ", longest_prompt, " + output ", max_output,
                     " tokens) exceeds --max-model-len ", max_model_len,
                     " (raise it to the server's context length)"));
  }
  return absl::OkStatus();
}

std::vector<BenchRequest> GenerateDataset(const DatasetConfig& config, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<uint32_t>> prefixes(static_cast<size_t>(std::max<int64_t>(config.num_prefixes, 1)));
  for (std::vector<uint32_t>& prefix : prefixes) AppendRandomIds(rng, config.prefix_len, config.vocab_size, &prefix);
  std::vector<BenchRequest> out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    BenchRequest req;
    int64_t input_len;
    if (config.kind == DatasetKind::kShareGptLike) {
      const double x = rng.LogNormal(std::log(kShareGptInputMedian), kShareGptInputSigma);
      const double y = rng.LogNormal(std::log(kShareGptOutputMedian), kShareGptOutputSigma);
      // Clamp in double first: a far tail draw must not overflow int64.
      input_len = static_cast<int64_t>(
          std::clamp(std::round(x), double(kShareGptMinInput), double(config.max_model_len - 1)));
      req.output_len = static_cast<int64_t>(std::clamp(std::round(y), 1.0, double(config.max_model_len - input_len)));
    } else {
      input_len = Draw(rng, config.input_len);
      if (config.output_len_choices.empty()) {
        req.output_len = Draw(rng, config.output_len);
      } else {
        const int64_t last = static_cast<int64_t>(config.output_len_choices.size()) - 1;
        req.output_len = config.output_len_choices[static_cast<size_t>(Draw(rng, {0, last}))];
      }
    }
    if (config.kind == DatasetKind::kMultiTurn) {
      req.conversation = i / config.num_turns;
      req.turn = i % config.num_turns;
    }
    if (req.turn == 0) {
      // One prefix: no draw, so single-prefix datasets stay what they were.
      const int64_t which = prefixes.size() == 1 ? 0 : Draw(rng, {0, static_cast<int64_t>(prefixes.size()) - 1});
      req.prompt_token_ids = prefixes[static_cast<size_t>(which)];
    }
    AppendRandomIds(rng, input_len, config.vocab_size, &req.prompt_token_ids);
    out.push_back(std::move(req));
  }
  return out;
}

}  // namespace tandem::bench
