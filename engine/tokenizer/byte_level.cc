// Byte-level alphabet; see byte_level.h.
#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace tandem::tokenizer_internal {
namespace {

struct Tables {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of each byte's character
  std::array<int, 0x144> char_to_byte;        // codepoint -> byte, -1 if none
};

// The bytes_to_unicode() table of GPT-2's encoder.py.
const Tables& GetTables() {
  static const Tables* const tables = [] {
    auto* t = new Tables;
    t->char_to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendChar(cp, &t->byte_to_char[b]);
      t->char_to_byte[cp] = b;
    }
    return t;
  }();
  return *tables;
}

}  // namespace

void BytesToAlphabet(std::string_view bytes, std::string* out) {
  const Tables& t = GetTables();
  for (unsigned char b : bytes) out->append(t.byte_to_char[b]);
}

bool AlphabetToBytes(std::string_view text, std::string* out) {
  const Tables& t = GetTables();
  const size_t old_size = out->size();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    const char32_t cp = DecodeChar(text, pos, &len);
    if (cp >= t.char_to_byte.size() || t.char_to_byte[cp] < 0) {
      out->resize(old_size);
      return false;
    }
    out->push_back(static_cast<char>(t.char_to_byte[cp]));
    pos += len;
  }
  return true;
}

std::string_view ByteToAlphabetChar(unsigned char b) { return GetTables().byte_to_char[b]; }

}  // namespace tandem::tokenizer_internal
