// IncrementalDecoder; see tokenizer.h for the contract.
//
// Why the has_text_ switch: Decode(P + G) - Decode(P) is the raw text of G
// (DecodeContinuation) once any raw text precedes G, but Decode(G) itself
// (leading space stripped) while nothing does. The window decodes use the
// matching mode, so the difference between the two window decodes is the
// right text in both cases.
#include <algorithm>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace tandem {
namespace {

// How many prompt ids before the first generated one are decoded with it
// (as vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET).
constexpr size_t kInitialContextIds = 5;

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                                       bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens), ids_(prompt_ids.begin(), prompt_ids.end()) {
  read_offset_ = ids_.size();
  prefix_offset_ = read_offset_ > kInitialContextIds ? read_offset_ - kInitialContextIds : 0;
  has_text_ = !ids_.empty() && !tokenizer_.DecodeContinuation(ids_, skip_special_tokens_).empty();
  prefix_text_ = DecodeWindow(prefix_offset_, read_offset_);
}

std::string IncrementalDecoder::DecodeWindow(size_t begin, size_t end) const {
  const std::span<const int32_t> window(ids_.data() + begin, end - begin);
  return has_text_ ? tokenizer_.DecodeContinuation(window, skip_special_tokens_)
                   : tokenizer_.Decode(window, skip_special_tokens_);
}

std::string IncrementalDecoder::Add(int32_t id) {
  ids_.push_back(id);
  return Advance(/*hold_incomplete=*/true);
}

std::string IncrementalDecoder::Flush() { return Advance(/*hold_incomplete=*/false); }

std::string IncrementalDecoder::Advance(bool hold_incomplete) {
  if (read_offset_ == ids_.size()) return "";
  const std::string full = DecodeWindow(prefix_offset_, ids_.size());
  if (hold_incomplete && full.ends_with(tokenizer_internal::kReplacementChar)) return "";
  // Normally prefix_text_ is a prefix of `full`; if the window's first ids
  // completed a character only now, emit from the first difference (on a
  // character boundary).
  size_t common = 0;
  const size_t limit = std::min(full.size(), prefix_text_.size());
  while (common < limit && full[common] == prefix_text_[common]) ++common;
  common = tokenizer_internal::CharStart(full, common);  // `full` is valid UTF-8 (Decode's output)
  if (hold_incomplete && full.size() <= common) return "";  // nothing new yet (e.g. a skipped special token)
  std::string text = full.substr(common);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  has_text_ = has_text_ || !text.empty();
  prefix_text_ = DecodeWindow(prefix_offset_, read_offset_);
  return text;
}

}  // namespace tandem
