// Oniguruma-backed tokenizer regexes; see split_regex.h.
#include "engine/tokenizer/split_regex.h"

// Oniguruma's header defines UChar unless told not to, and ICU (utf8.h's
// implementation) has its own.
#define ONIG_ESCAPE_UCHAR_COLLISION 1
#include <oniguruma.h>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::tokenizer_internal {
namespace {

// onig_initialize is process-wide and not thread-safe: run it once, before
// the first compile.
void InitOniguruma() {
  static const int initialized = [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    return onig_initialize(encodings, 1);
  }();
  (void)initialized;
}

std::string OnigMessage(int code, OnigErrorInfo* info = nullptr) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  const int n = info != nullptr ? onig_error_code_to_str(buf, code, info) : onig_error_code_to_str(buf, code);
  return std::string(reinterpret_cast<const char*>(buf), n > 0 ? static_cast<size_t>(n) : 0);
}

// Per-search state: a match region and the limits, as Oniguruma's match
// parameters.
class Search {
 public:
  explicit Search(const SplitRegex::Limits& limits) : region_(onig_region_new()), param_(onig_new_match_param()) {
    onig_initialize_match_param(param_);
    onig_set_retry_limit_in_match_of_match_param(param_, limits.retry_limit);
    onig_set_retry_limit_in_search_of_match_param(param_, limits.retry_limit);
    onig_set_match_stack_limit_size_of_match_param(param_, limits.stack_limit);
  }
  ~Search() {
    onig_region_free(region_, 1);
    onig_free_match_param(param_);
  }
  Search(const Search&) = delete;
  Search& operator=(const Search&) = delete;

  // Searches text[from..) (lookbehind sees all of `text`). Returns the match
  // start, ONIG_MISMATCH, or a negative Oniguruma error code.
  int Run(re_pattern_buffer* regex, std::string_view text, size_t from) {
    const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
    const OnigUChar* end = begin + text.size();
    return onig_search_with_param(regex, begin, end, begin + from, end, region_, ONIG_OPTION_NONE, param_);
  }
  size_t match_end() const { return static_cast<size_t>(region_->end[0]); }

 private:
  OnigRegion* region_;
  OnigMatchParam* param_;
};

// Valid UTF-8 stand-in for text with ill-formed bytes: each maximal
// ill-formed subpart becomes U+FFFD. to_original[i] is the offset in the
// original text of offset i of the stand-in (for every character boundary,
// and for its end).
struct Sanitized {
  std::string text;
  std::vector<size_t> to_original;
};

Sanitized Sanitize(std::string_view text) {
  Sanitized out;
  out.text.reserve(text.size() + 16);
  out.to_original.reserve(text.size() + 17);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    if (NextCodePoint(text, pos, &len) < 0) {
      out.text.append(kReplacementChar);
      out.to_original.insert(out.to_original.end(), kReplacementChar.size(), pos);
    } else {
      out.text.append(text.substr(pos, len));
      for (size_t i = 0; i < len; ++i) out.to_original.push_back(pos + i);
    }
    pos += len;
  }
  out.to_original.push_back(text.size());
  return out;
}

}  // namespace

void SplitRegex::RegexDeleter::operator()(re_pattern_buffer* regex) const { onig_free(regex); }

SplitRegex::SplitRegex(std::string pattern, std::unique_ptr<re_pattern_buffer, RegexDeleter> regex,
                       const Limits& limits)
    : pattern_(std::move(pattern)), regex_(std::move(regex)), limits_(limits) {}

SplitRegex::~SplitRegex() = default;

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Create(std::string_view pattern) {
  return Create(pattern, Limits{});
}

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Create(std::string_view pattern, const Limits& limits) {
  InitOniguruma();
  if (!IsValidUtf8(pattern)) {
    return absl::InvalidArgumentError(absl::StrCat("regex '", AsAbsl(ToValidUtf8(pattern)), "': not valid UTF-8"));
  }
  OnigRegex regex = nullptr;
  OnigErrorInfo info;
  const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int rc = onig_new(&regex, begin, begin + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                          ONIG_SYNTAX_DEFAULT, &info);
  if (rc != ONIG_NORMAL) {
    if (regex != nullptr) onig_free(regex);
    return absl::InvalidArgumentError(
        absl::StrCat("regex '", AsAbsl(pattern), "' does not compile: ", OnigMessage(rc, &info)));
  }
  return std::unique_ptr<SplitRegex>(new SplitRegex(
      std::string(pattern), std::unique_ptr<re_pattern_buffer, RegexDeleter>(regex), limits));
}

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::CreateLiteral(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("split pattern: empty string");
  return std::unique_ptr<SplitRegex>(new SplitRegex(std::string(text), nullptr, Limits{}));
}

absl::Status SplitRegex::FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  if (regex_ == nullptr) {  // literal
    for (size_t pos = text.find(pattern_); pos != std::string_view::npos;
         pos = text.find(pattern_, pos + pattern_.size())) {
      matches->emplace_back(pos, pos + pattern_.size());
    }
    return absl::OkStatus();
  }
  if (IsValidUtf8(text)) return FindMatchesValid(text, matches);
  const Sanitized sanitized = Sanitize(text);
  std::vector<std::pair<size_t, size_t>> found;
  if (absl::Status status = FindMatchesValid(sanitized.text, &found); !status.ok()) return status;
  for (const auto& [begin, end] : found) {
    matches->emplace_back(sanitized.to_original[begin], sanitized.to_original[end]);
  }
  return absl::OkStatus();
}

absl::Status SplitRegex::FindMatchesValid(std::string_view text,
                                          std::vector<std::pair<size_t, size_t>>* matches) const {
  Search search(limits_);
  const size_t old_size = matches->size();
  size_t pos = 0;
  while (pos <= text.size()) {
    const int rc = search.Run(regex_.get(), text, pos);
    if (rc == ONIG_MISMATCH) break;
    if (rc < 0) {
      matches->resize(old_size);
      const bool limit = rc == ONIGERR_RETRY_LIMIT_IN_MATCH_OVER || rc == ONIGERR_RETRY_LIMIT_IN_SEARCH_OVER ||
                         rc == ONIGERR_MATCH_STACK_LIMIT_OVER;
      const std::string what =
          absl::StrCat("regex '", AsAbsl(pattern_), "' on ", text.size(), " bytes of text, searching from byte ", pos,
                       ": ", OnigMessage(rc));
      if (limit) {
        return absl::ResourceExhaustedError(absl::StrCat(
            what, " (retry limit ", limits_.retry_limit, ", stack limit ", limits_.stack_limit,
            "; the text has a run of one character class too long, or input the pattern backtracks on heavily)"));
      }
      return absl::InternalError(what);
    }
    const auto begin = static_cast<size_t>(rc);
    const size_t end = search.match_end();
    if (end == begin) {  // empty match: step over one character
      if (begin >= text.size()) break;
      pos = begin + CharLen(text, begin);
      continue;
    }
    matches->emplace_back(begin, end);
    pos = end;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SplitRegex::ReplaceAll(std::string_view text, std::string_view replacement) const {
  std::vector<std::pair<size_t, size_t>> found;
  if (absl::Status status = FindMatches(text, &found); !status.ok()) return status;
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [begin, end] : found) {
    out.append(text.substr(prev, begin - prev));
    out.append(replacement);
    prev = end;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace tandem::tokenizer_internal
