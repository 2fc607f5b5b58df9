// UTF-8 helpers on ICU's UTF-8 macros (unicode/utf8.h) and character
// properties (unicode/uchar.h); see utf8.h.
//
// ICU's U8_NEXT / U8_PREV follow the Unicode "maximal subpart" practice: an
// ill-formed sequence yields a negative code point and steps over its
// maximal subpart (a lead byte and the continuation bytes that still fit it,
// or one stray byte). The macros index with int32_t, so every call here looks
// at a window of at most 4 bytes (one character) and text of any size works.
#include "engine/tokenizer/utf8.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>

namespace tandem::tokenizer_internal {
namespace {

// U8_NEXT on the character at text[pos]; see NextCodePoint.
UChar32 Next(std::string_view text, size_t pos, size_t* len) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data() + pos);
  const auto length = static_cast<int32_t>(std::min<size_t>(text.size() - pos, U8_MAX_LENGTH));
  int32_t i = 0;
  UChar32 c = 0;
  U8_NEXT(s, i, length, c);
  *len = static_cast<size_t>(i);
  return c;
}

}  // namespace

int32_t NextCodePoint(std::string_view text, size_t pos, size_t* len) {
  const UChar32 c = Next(text, pos, len);
  return c < 0 ? -1 : c;
}

size_t CharLen(std::string_view text, size_t pos) {
  size_t len = 0;
  return Next(text, pos, &len) < 0 ? 1 : len;
}

char32_t DecodeChar(std::string_view text, size_t pos, size_t* len) {
  const UChar32 c = Next(text, pos, len);
  if (c >= 0) return static_cast<char32_t>(c);
  *len = 1;
  return 0xFFFD;
}

void AppendChar(char32_t cp, std::string* out) {
  uint8_t buf[U8_MAX_LENGTH];
  int32_t n = 0;
  UBool error = false;
  U8_APPEND(buf, n, U8_MAX_LENGTH, static_cast<UChar32>(cp), error);
  if (error) {  // surrogate or beyond U+10FFFF: not encodable
    out->append(kReplacementChar);
    return;
  }
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    // Copy the longest valid run at once.
    size_t run = pos;
    size_t len = 0;
    UChar32 c = 0;
    while (run < bytes.size() && (c = Next(bytes, run, &len)) >= 0) run += len;
    out.append(bytes.substr(pos, run - pos));
    if (run == bytes.size()) break;
    // A maximal ill-formed subpart becomes one U+FFFD.
    out.append(kReplacementChar);
    pos = run + len;
  }
  return out;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  size_t len = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    if (Next(text, pos, &len) < 0) return false;
    pos += len;
  }
  return true;
}

size_t CompletePrefixLen(std::string_view text) {
  // Only the last (up to 3) bytes can form an incomplete sequence: a lead
  // byte whose maximal subpart runs to the end of the text without being a
  // whole character may still become one.
  const size_t start = text.size() > 3 ? text.size() - 3 : 0;
  for (size_t pos = start; pos < text.size(); ++pos) {
    if (!U8_IS_LEAD(static_cast<uint8_t>(text[pos]))) continue;
    size_t len = 0;
    if (Next(text, pos, &len) < 0 && pos + len == text.size()) return pos;
  }
  return text.size();
}

bool IsWhitespace(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

size_t TrailingWhitespaceLen(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    // A window ending at `end`, of at most one character's length.
    const size_t begin = end > U8_MAX_LENGTH ? end - U8_MAX_LENGTH : 0;
    const auto* s = reinterpret_cast<const uint8_t*>(text.data() + begin);
    auto i = static_cast<int32_t>(end - begin);
    UChar32 c = 0;
    U8_PREV(s, 0, i, c);
    if (c < 0 || !u_isUWhiteSpace(c)) break;
    end = begin + static_cast<size_t>(i);
  }
  return text.size() - end;
}

size_t LeadingWhitespaceLen(std::string_view text) {
  size_t pos = 0;
  size_t len = 0;
  while (pos < text.size()) {
    const UChar32 c = Next(text, pos, &len);
    if (c < 0 || !u_isUWhiteSpace(c)) break;
    pos += len;
  }
  return pos;
}

size_t CharStart(std::string_view text, size_t pos) {
  if (pos == 0 || pos >= text.size()) return pos;
  // U8_SET_CP_START looks back at most 3 bytes, so a window of those will do.
  const size_t begin = pos > U8_MAX_LENGTH - 1 ? pos - (U8_MAX_LENGTH - 1) : 0;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data() + begin);
  auto i = static_cast<int32_t>(pos - begin);
  U8_SET_CP_START(s, 0, i);
  return begin + static_cast<size_t>(i);
}

}  // namespace tandem::tokenizer_internal
