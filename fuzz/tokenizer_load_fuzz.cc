// Fuzz target: tokenizer.json loading (Tokenizer::LoadFromJson, the body of
// Tokenizer::Load). Input: tokenizer.json text, optionally followed by a NUL
// and tokenizer_config.json text.
// Asserts: loading never throws or crashes and gives OK or an error status;
// a tokenizer that loads encodes a fixed text (and the input's own text)
// into ids inside [0, vocab_size), decodes any ids to valid UTF-8, and its
// bos/eos ids are inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "fuzz/fuzz_util.h"

namespace {

void CheckIds(const tandem::Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encoded id outside the vocabulary");
  }
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(tok.Decode(ids, /*skip_special_tokens=*/false)), "decode gave invalid UTF-8");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [json, config] = tandem::fuzz::SplitAtNul(tandem::fuzz::AsView(data, size));
  absl::StatusOr<std::unique_ptr<tandem::Tokenizer>> tok = tandem::Tokenizer::LoadFromJson(json, config);
  if (!tok.ok()) {
    FUZZ_CHECK(!tok.status().message().empty(), "an error without a message");
    return 0;
  }
  const tandem::Tokenizer& t = **tok;
  FUZZ_CHECK(t.vocab_size() >= 0, "negative vocab size");
  if (t.bos_id()) FUZZ_CHECK(*t.bos_id() >= 0 && *t.bos_id() < t.vocab_size(), "bos outside the vocabulary");
  if (t.eos_id()) FUZZ_CHECK(*t.eos_id() >= 0 && *t.eos_id() < t.vocab_size(), "eos outside the vocabulary");
  for (std::string_view text : {std::string_view("Hello, world! 123 \xc3\xa9t\xc3\xa9"), json.substr(0, 64)}) {
    absl::StatusOr<std::vector<int32_t>> ids = t.TryEncode(text);
    if (ids.ok()) CheckIds(t, *ids);
  }
  std::vector<int32_t> all;
  for (int32_t id = -2; id < t.vocab_size() + 2 && id < 300; ++id) all.push_back(id);
  FUZZ_CHECK(tandem::fuzz::IsValidUtf8(t.Decode(all, /*skip_special_tokens=*/false)), "decode gave invalid UTF-8");
  return 0;
}
