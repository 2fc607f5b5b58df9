// UTF-8 helpers; see utf8.h.
#include "engine/tokenizer/utf8.h"

#include <cstdint>

namespace tandem::tokenizer_internal {
namespace {

// Validates the sequence starting at text[pos]; returns its length or 0 when
// invalid. Follows the Unicode table of well-formed byte sequences (no
// overlongs, no surrogates, nothing above U+10FFFF). *needed receives how many
// bytes a valid sequence with this lead byte has (0 for an invalid lead).
size_t ValidSeqLen(std::string_view text, size_t pos, size_t* needed, size_t* valid_prefix) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  size_t n = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 < 0x80) {
    *needed = 1;
    *valid_prefix = 1;
    return 1;
  } else if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *needed = 0;
    *valid_prefix = 0;
    return 0;
  }
  *needed = n;
  size_t i = 1;
  for (; i < n && pos + i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[pos + i]);
    const uint8_t l = i == 1 ? lo : 0x80;
    const uint8_t h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  *valid_prefix = i;  // lead byte plus the continuation bytes that fit
  return i == n ? n : 0;
}

}  // namespace

size_t CharLen(std::string_view text, size_t pos) {
  size_t needed = 0, prefix = 0;
  const size_t n = ValidSeqLen(text, pos, &needed, &prefix);
  return n == 0 ? 1 : n;
}

char32_t DecodeChar(std::string_view text, size_t pos, size_t* len) {
  size_t needed = 0, prefix = 0;
  const size_t n = ValidSeqLen(text, pos, &needed, &prefix);
  if (n == 0) {
    *len = 1;
    return 0xFFFD;
  }
  *len = n;
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (n == 1) return b0;
  char32_t cp = b0 & (0xFF >> (n + 1));
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  return cp;
}

void AppendChar(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t needed = 0, prefix = 0;
    const size_t n = ValidSeqLen(bytes, pos, &needed, &prefix);
    if (n > 0) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      // A maximal subpart (a lead byte plus fitting continuation bytes, or
      // one stray byte) becomes one U+FFFD.
      out.append(kReplacementChar);
      pos += prefix == 0 ? 1 : prefix;
    }
  }
  return out;
}

size_t CompletePrefixLen(std::string_view text) {
  // Only the last (up to 3) bytes can form an incomplete sequence.
  const size_t start = text.size() > 3 ? text.size() - 3 : 0;
  for (size_t pos = start; pos < text.size(); ++pos) {
    const auto b = static_cast<uint8_t>(text[pos]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte
    size_t needed = 0, prefix = 0;
    ValidSeqLen(text, pos, &needed, &prefix);
    if (needed > 1 && prefix == text.size() - pos && prefix < needed) return pos;
  }
  return text.size();
}

bool IsWhitespace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t TrailingWhitespaceLen(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80 && end - start < 4) --start;
    size_t len = 0;
    const char32_t cp = DecodeChar(text, start, &len);
    if (start + len != end || !IsWhitespace(cp)) break;
    end = start;
  }
  return text.size() - end;
}

size_t LeadingWhitespaceLen(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    if (!IsWhitespace(DecodeChar(text, pos, &len))) break;
    pos += len;
  }
  return pos;
}

}  // namespace tandem::tokenizer_internal
