// Fuzz target: Tokenizer::TryEncode of arbitrary bytes, on the bundled
// byte-level BPE tokenizer (input byte 0 even) or a small SentencePiece-style
// one with byte fallback (odd). Input: a selector byte, a flags byte, then
// the text.
// Asserts: TryEncode never crashes or throws, fails only with
// ResourceExhausted (its documented limit); every id lies in [0, vocab_size);
// Decode gives valid UTF-8; on the byte-level tokenizer valid UTF-8 text
// round-trips exactly (Decode(Encode(t)) == t without special tokens); an
// IncrementalDecoder fed the ids yields exactly Decode(ids), in valid UTF-8
// pieces (tokenizer.h, IncrementalDecoder property 1 and 2).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/tokenizer.h"
#include "fuzz/fuzz_util.h"
#include "fuzz/small_tokenizers.h"

namespace {

const tandem::Tokenizer& Bundled() {
  static const tandem::Tokenizer* tok = [] {
    auto t = tandem::Tokenizer::Load(tandem::fuzz::BundledModelDir());
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return t->release();
  }();
  return *tok;
}

const tandem::Tokenizer& SentencePiece() {
  static const tandem::Tokenizer* tok = [] {
    auto t = tandem::Tokenizer::LoadFromJson(tandem::fuzz::kSentencePieceTokenizerJson, std::nullopt);
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return t->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const bool byte_level = (in.U8() & 1) == 0;
  const uint8_t flags = in.U8();
  const bool add_special = (flags & 1) != 0;
  const bool skip_special = (flags & 2) != 0;
  const std::string_view text = in.Rest();
  const tandem::Tokenizer& tok = byte_level ? Bundled() : SentencePiece();

  absl::StatusOr<std::vector<int32_t>> ids = tok.TryEncode(text, add_special);
  if (!ids.ok()) {
    FUZZ_CHECK(absl::IsResourceExhausted(ids.status()), ids.status().ToString());
    return 0;
  }
  for (int32_t id : *ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "id outside the vocabulary");
  if (!text.empty()) FUZZ_CHECK(!ids->empty(), "non-empty text gave no ids");
  const std::string decoded = tok.Decode(*ids, skip_special);
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(decoded), "Decode gave invalid UTF-8");
  if (byte_level && !add_special && tandem::fuzz::IsValidUtf8(text)) {
    FUZZ_CHECK(tok.Decode(*ids, /*skip_special_tokens=*/false) == text, "byte-level round trip differs");
  }
  tandem::IncrementalDecoder inc(tok, {}, skip_special);
  std::string streamed;
  for (int32_t id : *ids) {
    std::string piece = inc.Add(id);
    FUZZ_CHECK(tandem::fuzz::IsValidUtf8(piece), "IncrementalDecoder piece is invalid UTF-8");
    streamed += piece;
  }
  streamed += inc.Flush();
  FUZZ_CHECK(streamed == decoded, "IncrementalDecoder differs from Decode");
  return 0;
}
