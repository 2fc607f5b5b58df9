// HfTokenizer; see hf_tokenizer.h.
#include "engine/tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <utility>

namespace tandem::tokenizer_internal {
namespace {

// The strings the two added-token matchers look for: normalized=false tokens
// match their content in the raw text; normalized=true ones their normalized
// content in normalized text. A token gets "" (ignored) in the other set.
std::vector<std::string> MatcherContents(const std::vector<AddedToken>& tokens, const Normalizer* normalizer,
                                         bool normalized_set) {
  std::vector<std::string> contents;
  for (const AddedToken& t : tokens) {
    const bool in_set = normalizer != nullptr ? t.normalized == normalized_set : !normalized_set;
    std::string content = in_set ? t.content : "";
    // A token's content is short: a limit hit here would take a content of
    // over a million characters, and would leave it as it is.
    if (in_set && normalized_set) normalizer->Normalize(&content).IgnoreError();
    contents.push_back(std::move(content));
  }
  return contents;
}

}  // namespace

HfTokenizer::HfTokenizer(TokenizerParts parts)
    : parts_(std::move(parts)),
      raw_matcher_(parts_.added_tokens, MatcherContents(parts_.added_tokens, parts_.normalizer.get(), false)),
      normalized_matcher_(parts_.added_tokens, MatcherContents(parts_.added_tokens, parts_.normalizer.get(), true)) {
  int32_t size = 0;
  for (const auto& [token, id] : parts_.model->vocab()) size = std::max(size, id + 1);
  for (const AddedToken& t : parts_.added_tokens) size = std::max(size, t.id + 1);
  id_to_token_.resize(size);
  is_special_.resize(size, false);
  for (const auto& [token, id] : parts_.model->vocab()) id_to_token_[id] = token;
  for (const AddedToken& t : parts_.added_tokens) {
    id_to_token_[t.id] = t.content;
    is_special_[t.id] = t.special;
    added_ids_[t.content] = t.id;
  }
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::TryEncode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special_tokens && parts_.add_bos && parts_.bos_id.has_value()) ids.push_back(*parts_.bos_id);
  if (raw_matcher_.empty()) {
    if (absl::Status status = EncodeStretch(std::string(text), true, &ids); !status.ok()) return status;
  } else {
    for (const TextSegment& seg : raw_matcher_.Split(text)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      const std::string_view stretch = text.substr(seg.begin, seg.end - seg.begin);
      if (absl::Status status = EncodeStretch(std::string(stretch), seg.begin == 0, &ids); !status.ok()) return status;
    }
  }
  if (add_special_tokens && parts_.add_eos && parts_.eos_id.has_value()) ids.push_back(*parts_.eos_id);
  return ids;
}

absl::Status HfTokenizer::EncodeStretch(std::string text, bool at_start, std::vector<int32_t>* ids) const {
  if (text.empty()) return absl::OkStatus();
  if (parts_.normalizer != nullptr) {
    if (absl::Status status = parts_.normalizer->Normalize(&text); !status.ok()) return status;
  }
  std::vector<TextSegment> segments;
  if (normalized_matcher_.empty()) {
    segments.push_back(TextSegment{0, text.size(), -1});
  } else {
    segments = normalized_matcher_.Split(text);
  }
  std::vector<PreToken> pieces;
  for (const TextSegment& seg : segments) {
    if (seg.id >= 0) {
      ids->push_back(seg.id);
      continue;
    }
    if (seg.begin == seg.end) continue;
    pieces.clear();
    pieces.push_back(PreToken{text.substr(seg.begin, seg.end - seg.begin), at_start && seg.begin == 0});
    if (parts_.pre_tokenizer != nullptr) {
      if (absl::Status status = parts_.pre_tokenizer->Apply(&pieces); !status.ok()) return status;
    }
    for (const PreToken& piece : pieces) parts_.model->Tokenize(piece.text, ids);
  }
  return absl::OkStatus();
}

std::string HfTokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return DecodeImpl(ids, skip_special_tokens, false);
}

std::string HfTokenizer::DecodeContinuation(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return DecodeImpl(ids, skip_special_tokens, true);
}

std::string HfTokenizer::DecodeImpl(std::span<const int32_t> ids, bool skip_special_tokens, bool continuation) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && is_special_[id]) continue;
    tokens.push_back(id_to_token_[id]);
  }
  return parts_.decoder->Decode(std::move(tokens), continuation);
}

bool HfTokenizer::IsSpecial(int32_t id) const { return id >= 0 && id < vocab_size() && is_special_[id]; }

std::string HfTokenizer::IdToToken(int32_t id) const {
  return id >= 0 && id < vocab_size() ? id_to_token_[id] : std::string();
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_ids_.find(absl::string_view(token.data(), token.size())); it != added_ids_.end())
    return it->second;
  const auto& vocab = parts_.model->vocab();
  if (auto it = vocab.find(absl::string_view(token.data(), token.size())); it != vocab.end()) return it->second;
  return std::nullopt;
}

}  // namespace tandem::tokenizer_internal
