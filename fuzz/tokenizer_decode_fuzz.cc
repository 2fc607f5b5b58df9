// Fuzz target: Tokenizer::Decode / DecodeContinuation / IdToToken /
// IsSpecial and IncrementalDecoder on arbitrary id lists, including ids
// outside the vocabulary and negative ones, on the bundled byte-level
// tokenizer or the small SentencePiece-style one (byte 0 selects). Input: a
// selector byte, a flags byte, then little-endian int32 ids.
// Asserts: no crash on any id; ids outside [0, vocab_size) decode to
// nothing (Decode(ids) == Decode(ids inside the vocabulary)) and have no
// token string; output is valid UTF-8; streaming the ids through an
// IncrementalDecoder after a prompt gives valid UTF-8 pieces.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "fuzz/fuzz_util.h"
#include "fuzz/small_tokenizers.h"

namespace {

const tandem::Tokenizer& Get(bool byte_level) {
  static const tandem::Tokenizer* bundled = [] {
    auto t = tandem::Tokenizer::Load(tandem::fuzz::BundledModelDir());
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return t->release();
  }();
  static const tandem::Tokenizer* sp = [] {
    auto t = tandem::Tokenizer::LoadFromJson(tandem::fuzz::kSentencePieceTokenizerJson, std::nullopt);
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return t->release();
  }();
  return byte_level ? *bundled : *sp;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const tandem::Tokenizer& tok = Get((in.U8() & 1) == 0);
  const uint8_t flags = in.U8();
  const bool skip_special = (flags & 1) != 0;
  const size_t num_prompt = (flags >> 1) & 7;  // the first ids are the prompt
  std::vector<int32_t> ids;
  std::vector<int32_t> inside;
  while (!in.empty() && ids.size() < 4096) {
    const auto id = static_cast<int32_t>(in.U32());
    ids.push_back(id);
    const bool in_vocab = id >= 0 && id < tok.vocab_size();
    if (in_vocab) inside.push_back(id);
    if (!in_vocab) {
      FUZZ_CHECK(tok.IdToToken(id).empty(), "an id outside the vocabulary has a token string");
      FUZZ_CHECK(!tok.IsSpecial(id), "an id outside the vocabulary is special");
    }
  }
  const std::string text = tok.Decode(ids, skip_special);
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(text), "Decode gave invalid UTF-8");
  FUZZ_CHECK(text == tok.Decode(inside, skip_special), "ids outside the vocabulary changed the text");
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(tok.DecodeContinuation(ids, skip_special)), "DecodeContinuation: invalid UTF-8");

  const size_t split = std::min(num_prompt, ids.size());
  tandem::IncrementalDecoder inc(tok, std::span<const int32_t>(ids.data(), split), skip_special);
  for (size_t i = split; i < ids.size(); ++i) {
    FUZZ_CHECK(tandem::fuzz::IsValidUtf8(inc.Add(ids[i])), "IncrementalDecoder piece is invalid UTF-8");
  }
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(inc.Flush()), "IncrementalDecoder flush is invalid UTF-8");
  return 0;
}
