#include "router/request_validator.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/sampler/sampling_defaults.h"
#include "tandem/v1/generation.pb.h"

namespace tandem {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Rejects fields this server does not know (set by a newer client).
absl::Status CheckNoUnknownFields(const google::protobuf::Message& m, absl::string_view where) {
  const auto& unknown = m.GetReflection()->GetUnknownFields(m);
  if (unknown.field_count() > 0) {
    return Invalid(where, absl::StrCat("unknown field number ", unknown.field(0).number(),
                                       " (client newer than this server?)"));
  }
  return absl::OkStatus();
}

absl::Status ApplySampling(const v1::SamplingParams& s, const ModelConfig& config, SamplingParams* p) {
  const int64_t vocab = config.vocab_size;
  if (s.has_temperature()) {
    if (!std::isfinite(s.temperature()) || s.temperature() < 0) {
      return Invalid("sampling.temperature", absl::StrCat(s.temperature(), " must be >= 0"));
    }
    p->temperature = s.temperature();
  }
  if (s.has_top_p()) {
    if (!(s.top_p() > 0.0f && s.top_p() <= 1.0f)) {
      return Invalid("sampling.top_p", absl::StrCat(s.top_p(), " must be in (0, 1]"));
    }
    p->top_p = s.top_p();
  }
  if (s.has_top_k()) {
    if (s.top_k() < -1) return Invalid("sampling.top_k", absl::StrCat(s.top_k(), " must be -1, 0 or positive"));
    p->top_k = s.top_k();
  }
  if (!(s.min_p() >= 0.0f && s.min_p() <= 1.0f)) {
    return Invalid("sampling.min_p", absl::StrCat(s.min_p(), " must be in [0, 1]"));
  }
  p->min_p = s.min_p();
  if (s.has_repetition_penalty()) {
    if (!std::isfinite(s.repetition_penalty()) || s.repetition_penalty() <= 0) {
      return Invalid("sampling.repetition_penalty", absl::StrCat(s.repetition_penalty(), " must be > 0"));
    }
    p->repetition_penalty = s.repetition_penalty();
  }
  if (!(s.frequency_penalty() >= -2.0f && s.frequency_penalty() <= 2.0f)) {
    return Invalid("sampling.frequency_penalty", absl::StrCat(s.frequency_penalty(), " must be in [-2, 2]"));
  }
  p->frequency_penalty = s.frequency_penalty();
  if (!(s.presence_penalty() >= -2.0f && s.presence_penalty() <= 2.0f)) {
    return Invalid("sampling.presence_penalty", absl::StrCat(s.presence_penalty(), " must be in [-2, 2]"));
  }
  p->presence_penalty = s.presence_penalty();
  p->max_tokens = s.max_tokens() == 0 ? RequestValidator::kDefaultMaxTokens : s.max_tokens();
  if (s.has_seed()) p->seed = s.seed();
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) >= vocab) {
      return Invalid(absl::StrCat("sampling.stop_token_ids[", i, "]"),
                     absl::StrCat(s.stop_token_ids(i), " is outside the vocabulary of ", vocab));
    }
    p->stop_token_ids.push_back(static_cast<int32_t>(s.stop_token_ids(i)));
  }
  p->ignore_eos = s.ignore_eos();
  if (s.logprobs() > 20) return Invalid("sampling.logprobs", absl::StrCat(s.logprobs(), " must be <= 20"));
  p->logprobs = s.logprobs();
  return p->Validate();
}

}  // namespace

absl::StatusOr<ValidatedRequest> RequestValidator::Validate(const v1::GenerateRequest& request,
                                                            const std::string& fallback_id) const {
  RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  RETURN_IF_ERROR(CheckNoUnknownFields(request.sampling(), "sampling"));
  ValidatedRequest v;
  v.request_id = request.request_id().empty() ? fallback_id : request.request_id();
  if (v.request_id.size() > 256) return Invalid("request_id", "longer than 256 bytes");
  v.priority = request.priority();

  if (!request.prompt().empty()) {
    if (tokenizer_ == nullptr) return Invalid("prompt", "this model has no tokenizer: send prompt_token_ids");
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->TryEncode(request.prompt());
    if (!ids.ok()) return Invalid("prompt", absl::StrCat("cannot be tokenized: ", ids.status().message()));
    v.prompt_token_ids = *std::move(ids);
  } else {
    for (int i = 0; i < request.prompt_token_ids_size(); ++i) {
      const uint32_t id = request.prompt_token_ids(i);
      if (id >= config_.vocab_size) {
        return Invalid(absl::StrCat("prompt_token_ids[", i, "]"),
                       absl::StrCat(id, " is outside the vocabulary of ", config_.vocab_size));
      }
      v.prompt_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (v.prompt_token_ids.empty()) return Invalid("prompt", "empty (give prompt or prompt_token_ids)");

  v.sampling = DefaultSamplingParams(config_.generation);
  RETURN_IF_ERROR(ApplySampling(request.sampling(), config_, &v.sampling));
  const auto& stops = request.sampling().stop();
  if (stops.size() > kMaxStopStrings) {
    return Invalid("sampling.stop", absl::StrCat(stops.size(), " stop strings; at most ", kMaxStopStrings));
  }
  for (int i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) return Invalid(absl::StrCat("sampling.stop[", i, "]"), "empty");
    if (tokenizer_ == nullptr) return Invalid("sampling.stop", "needs the model's tokenizer");
    v.stop.push_back(stops[i]);
  }
  const int64_t total = static_cast<int64_t>(v.prompt_token_ids.size()) + v.sampling.max_tokens;
  if (total > config_.max_position_embeddings) {
    return Invalid("sampling.max_tokens",
                   absl::StrCat("prompt (", v.prompt_token_ids.size(), " tokens) + max_tokens (",
                                v.sampling.max_tokens, ") exceeds the model's context of ",
                                config_.max_position_embeddings));
  }
  return v;
}

}  // namespace tandem
