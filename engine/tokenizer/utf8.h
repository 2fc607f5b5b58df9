// Small UTF-8 helpers shared by the tokenizer: codepoint iteration, encoding,
// lossy validation (invalid bytes -> U+FFFD) and the Unicode White_Space set,
// on ICU (unicode/utf8.h stepping, unicode/uchar.h properties). Ill-formed
// bytes are handled as ICU's U8_NEXT does: per Unicode's "maximal subpart"
// practice, which is also Python's bytes.decode(errors="replace").
//
// Thread-safety: stateless free functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace tandem::tokenizer_internal {

// This Abseil build's absl::string_view is not std::string_view; StrCat and
// hash-map lookups need the conversion.
inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// U+FFFD REPLACEMENT CHARACTER as UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Decodes the character at text[pos]: returns its code point and sets *len
// to its length, or returns -1 where the bytes are ill-formed and sets *len to
// the length of the maximal ill-formed subpart there (what one U+FFFD stands
// for in ToValidUtf8). Precondition: pos < size.
int32_t NextCodePoint(std::string_view text, size_t pos, size_t* len);

// Length in bytes of the (possibly invalid) UTF-8 character starting at
// text[pos]: the length of a valid sequence, else 1. Precondition: pos < size.
size_t CharLen(std::string_view text, size_t pos);

// Decodes the character at text[pos] (valid or not; invalid -> U+FFFD) and
// stores its byte length in *len. Precondition: pos < size.
char32_t DecodeChar(std::string_view text, size_t pos, size_t* len);

// Appends the UTF-8 encoding of `cp` to *out (U+FFFD for a surrogate or a
// value above U+10FFFF, which have none).
void AppendChar(char32_t cp, std::string* out);

// Returns `bytes` with every maximal invalid subsequence replaced by U+FFFD
// (the Unicode "substitution of maximal subparts" practice, as Python's
// bytes.decode(errors="replace") and Rust's String::from_utf8_lossy do).
std::string ToValidUtf8(std::string_view bytes);

// Whether `text` is well-formed UTF-8 (no surrogates, overlongs or values
// above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Length of the longest prefix of `text` that ends on a character boundary
// and leaves no incomplete-but-possibly-valid sequence at the end: bytes that
// could still become a character when more bytes arrive are excluded.
size_t CompletePrefixLen(std::string_view text);

// Unicode White_Space per ICU (what Python's `regex` \s, Oniguruma's \s and
// Rust's char::is_whitespace match): \t-\r, space, U+0085, U+00A0, U+1680,
// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool IsWhitespace(char32_t cp);

// Trailing / leading whitespace (per IsWhitespace) byte counts of `text`.
size_t TrailingWhitespaceLen(std::string_view text);
size_t LeadingWhitespaceLen(std::string_view text);

// The offset of the first byte of the well-formed character that contains
// text[pos]; `pos` itself when it starts a character, is not inside a
// well-formed one, or is text.size().
size_t CharStart(std::string_view text, size_t pos);

}  // namespace tandem::tokenizer_internal
