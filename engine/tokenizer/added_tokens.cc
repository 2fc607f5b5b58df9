// Added-token matching; see added_tokens.h.
#include "engine/tokenizer/added_tokens.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "engine/tokenizer/utf8.h"

namespace tandem::tokenizer_internal {
namespace {

// Word characters for single_word: Rust's char::is_alphanumeric or '_',
// approximated by general categories L* and N*, or '_'.
bool IsWordChar(std::string_view text, size_t pos) {
  size_t len = 0;
  const int32_t cp = NextCodePoint(text, pos, &len);
  if (cp < 0) return false;
  return cp == '_' || (U_GET_GC_MASK(cp) & (U_GC_L_MASK | U_GC_N_MASK)) != 0;
}

bool EndsWithWordChar(std::string_view text) {
  if (text.empty()) return false;
  const size_t start = CharStart(text, text.size() - 1);
  size_t len = 0;
  // The last character must end the text (a stray continuation byte is no
  // character).
  return NextCodePoint(text, start, &len) >= 0 && start + len == text.size() && IsWordChar(text, start);
}

bool StartsWithWordChar(std::string_view text) { return !text.empty() && IsWordChar(text, 0); }

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens, const std::vector<std::string>& contents) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (contents[i].empty()) continue;
    const AddedToken& t = tokens[i];
    by_first_byte_[static_cast<unsigned char>(contents[i][0])].push_back(
        Candidate{contents[i], t.id, t.lstrip, t.rstrip, t.single_word});
    ++num_candidates_;
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const Candidate& a, const Candidate& b) { return a.content.size() > b.content.size(); });
  }
}

std::vector<TextSegment> AddedTokenMatcher::Split(std::string_view text) const {
  std::vector<TextSegment> out;
  size_t plain_start = 0;  // start of the plain text not yet emitted
  size_t pos = 0;
  while (pos < text.size()) {
    const Candidate* found = nullptr;
    for (const Candidate& c : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      if (text.substr(pos).starts_with(c.content)) {
        found = &c;
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = pos + found->content.size();
    pos = end;
    if (found->single_word && (EndsWithWordChar(text.substr(0, begin)) || StartsWithWordChar(text.substr(end)))) {
      continue;
    }
    if (found->lstrip) {
      begin = std::max(begin - TrailingWhitespaceLen(text.substr(0, begin)), plain_start);
    }
    if (found->rstrip) end += LeadingWhitespaceLen(text.substr(end));
    if (plain_start < begin) out.push_back(TextSegment{plain_start, begin, -1});
    out.push_back(TextSegment{begin, end, found->id});
    plain_start = end;
    pos = end;
  }
  if (plain_start < text.size() || text.empty()) out.push_back(TextSegment{plain_start, text.size(), -1});
  return out;
}

}  // namespace tandem::tokenizer_internal
