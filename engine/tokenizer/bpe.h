// The BPE model of tokenizer.json (`model.type == "BPE"`): a vocabulary, a
// ranked merge list, and the merge loop that turns one pre-tokenized word
// into ids.
//
// Algorithm (as HuggingFace's Word::merge_all): the word starts as one
// symbol per character (unknown characters become <0xXX> byte tokens with
// byte_fallback, else the unk token, else nothing). A min-heap holds every
// adjacent pair that has a merge, keyed by (rank, position); popping the
// lowest rank (leftmost on ties) merges the pair in a linked list of symbols
// and pushes the two pairs it forms with its neighbours; stale heap entries
// are skipped. O(n log n) in the word's length, so even a 100 KB word (one
// SentencePiece segment) is fast.
//
// Thread-safety: immutable after construction; Tokenize is safe to call
// concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace tandem::tokenizer_internal {

class BpeModel {
 public:
  struct Options {
    bool byte_fallback = false;  // unknown chars -> <0xXX> tokens
    bool fuse_unk = false;       // consecutive unknowns -> one unk token
    bool ignore_merges = false;  // a word that is in the vocab is one token
    std::optional<int32_t> unk_id;
  };
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };

  BpeModel(absl::flat_hash_map<std::string, int32_t> vocab, absl::flat_hash_map<uint64_t, Merge> merges,
           Options options);

  // Parses `model` of tokenizer.json. Merges may be "a b" strings or ["a",
  // "b"] pairs. InvalidArgument for another model type, a malformed merge,
  // a merge naming a token outside the vocabulary, or an unsupported option
  // (dropout, continuing_subword_prefix, end_of_word_suffix).
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  // Appends the ids of `word` to *ids.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  // The model vocabulary (token -> id), without added tokens.
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // PairKey(left, right) -> merge
  Options options_;
  int32_t byte_ids_[256];  // id of "<0xXX>" per byte, -1 when absent
};

}  // namespace tandem::tokenizer_internal
