// Helpers shared by the fuzz targets (fuzz/README.md): the check that turns a
// broken invariant into a crash libFuzzer reports, input splitting, a reader
// of fixed-width values from the fuzzer's bytes, and the bundled model's
// location. Header-only; used by the targets only.
// Thread-safety: plain functions and a single-thread reader.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

// Aborts (a crash libFuzzer records with its input) when `cond` is false.
#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s: %s\n", __FILE__,        \
                   __LINE__, #cond, std::string(what).c_str());                       \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace tandem::fuzz {

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// Splits `input` at its first NUL byte (never valid in JSON): the part
// before, and the part after when there is a NUL.
inline std::pair<std::string_view, std::optional<std::string_view>> SplitAtNul(std::string_view input) {
  const size_t nul = input.find('\0');
  if (nul == std::string_view::npos) return {input, std::nullopt};
  return {input.substr(0, nul), input.substr(nul + 1)};
}

// Fixed-width little-endian values off the front of the input; zeros once
// it runs out (so every input is a valid sequence of reads).
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : bytes_(bytes) {}

  uint64_t U64() { return Take(8); }
  uint32_t U32() { return static_cast<uint32_t>(Take(4)); }
  uint16_t U16() { return static_cast<uint16_t>(Take(2)); }
  uint8_t U8() { return static_cast<uint8_t>(Take(1)); }
  bool Bool() { return (U8() & 1) != 0; }
  // What is left, all of it.
  std::string_view Rest() {
    std::string_view rest = bytes_;
    bytes_ = {};
    return rest;
  }
  // The next `n` bytes (fewer when the input runs out).
  std::string_view Bytes(size_t n) {
    n = std::min(n, bytes_.size());
    std::string_view out = bytes_.substr(0, n);
    bytes_.remove_prefix(n);
    return out;
  }
  bool empty() const { return bytes_.empty(); }

 private:
  uint64_t Take(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n && !bytes_.empty(); ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(bytes_[0])) << (8 * i);
      bytes_.remove_prefix(1);
    }
    return v;
  }
  std::string_view bytes_;
};

// The bundled model: $TANDEM_SOURCE_DIR/models/tandem-shakespeare, else
// found from this file's location at build time (TANDEM_FUZZ_SOURCE_DIR).
inline std::filesystem::path BundledModelDir() {
  const char* src = std::getenv("TANDEM_SOURCE_DIR");
  const std::filesystem::path root = src != nullptr ? std::filesystem::path(src) : std::filesystem::path(TANDEM_FUZZ_SOURCE_DIR);
  return root / "models" / "tandem-shakespeare";
}

// Whether `s` is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace tandem::fuzz
