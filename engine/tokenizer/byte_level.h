// GPT-2's byte <-> printable-character alphabet used by byte-level BPE: every
// byte 0..255 maps to one Unicode character (printable bytes to themselves,
// the rest to U+0100 onwards), so any byte string becomes a string of
// "visible" characters that the vocabulary and merges are written in.
//
// Thread-safety: the tables are built once (function-local static) and are
// read-only afterwards; all functions are safe to call concurrently.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tandem::tokenizer_internal {

// Maps each byte of `bytes` to its alphabet character and appends the UTF-8
// of those characters to *out.
void BytesToAlphabet(std::string_view bytes, std::string* out);

// Maps a string of alphabet characters back to bytes and appends them to
// *out. Returns false (appending nothing) when `text` contains a character
// outside the alphabet.
bool AlphabetToBytes(std::string_view text, std::string* out);

// The UTF-8 of the alphabet character for byte `b`.
std::string_view ByteToAlphabetChar(unsigned char b);

}  // namespace tandem::tokenizer_internal
