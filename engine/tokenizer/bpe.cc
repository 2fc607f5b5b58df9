// BPE model; see bpe.h.
#include "engine/tokenizer/bpe.h"

#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer_internal {
namespace {

using Json = nlohmann::json;

// One symbol of the word being merged: a doubly linked list over a vector.
struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

struct HeapEntry {
  uint32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t new_id;
  // std::priority_queue pops the greatest: make lowest (rank, pos) greatest.
  bool operator<(const HeapEntry& other) const { return rank != other.rank ? rank > other.rank : pos > other.pos; }
};

absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const Json& entry, size_t index) {
  if (entry.is_string()) {
    const std::string line = entry.get<std::string>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", index, "] = '", line, "': expected two tokens separated by one space"));
    }
    return std::make_pair(line.substr(0, space), line.substr(space + 1));
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return std::make_pair(entry[0].get<std::string>(), entry[1].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model.merges[", index, "] = ", entry.dump(), ": expected \"a b\" or [\"a\", \"b\"]"));
}

}  // namespace

BpeModel::BpeModel(absl::flat_hash_map<std::string, int32_t> vocab, absl::flat_hash_map<uint64_t, Merge> merges,
                   Options options)
    : vocab_(std::move(vocab)), merges_(std::move(merges)), options_(options) {
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(absl::StrFormat("<0x%02X>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

absl::StatusOr<BpeModel> BpeModel::FromJson(const Json& model) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported model type '", type, "' (only BPE is supported)"));
  }
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() > 0.0) {
    return absl::InvalidArgumentError("model.dropout: BPE dropout is unsupported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("model.", key, " is unsupported"));
    }
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("model.vocab: missing or not an object");
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(model["vocab"].size());
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= Tokenizer::kMaxVocabSize) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab['", token, "']: id is not an integer in [0, ",
                                                     Tokenizer::kMaxVocabSize, ")"));
    }
    vocab[token] = id.get<int32_t>();
  }

  const Json& merge_list = model.contains("merges") ? model["merges"] : Json::array();
  if (!merge_list.is_array()) return absl::InvalidArgumentError("model.merges: not an array");
  absl::flat_hash_map<uint64_t, Merge> merges;
  merges.reserve(merge_list.size());
  for (size_t i = 0; i < merge_list.size(); ++i) {
    auto pair = ParseMerge(merge_list[i], i);
    if (!pair.ok()) return pair.status();
    const std::string merged = pair->first + pair->second;
    int32_t ids[3];
    const std::string* parts[3] = {&pair->first, &pair->second, &merged};
    for (int k = 0; k < 3; ++k) {
      auto it = vocab.find(*parts[k]);
      if (it == vocab.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", i, "]: token '", *parts[k], "' is not in the vocabulary"));
      }
      ids[k] = it->second;
    }
    // As in HuggingFace (a map built from the list), a repeated pair keeps
    // its last rank.
    merges[PairKey(ids[0], ids[1])] = Merge{static_cast<uint32_t>(i), ids[2]};
  }

  Options options;
  options.byte_fallback = model.value("byte_fallback", false);
  options.fuse_unk = model.value("fuse_unk", false);
  options.ignore_merges = model.value("ignore_merges", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    auto it = vocab.find(unk);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.unk_token '", unk, "' is not in the vocabulary"));
    }
    options.unk_id = it->second;
  }
  return BpeModel(std::move(vocab), std::move(merges), options);
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    auto it = vocab_.find(absl::string_view(word.data(), word.size()));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // 1. One symbol per character.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  bool pending_unk = false;  // an unk symbol not yet added (fuse_unk)
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = CharLen(word, pos);
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    auto it = vocab_.find(absl::string_view(ch.data(), ch.size()));
    if (it != vocab_.end()) {
      if (pending_unk) add(*options_.unk_id), pending_unk = false;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all_bytes = true;
      for (unsigned char b : ch) all_bytes = all_bytes && byte_ids_[b] >= 0;
      if (all_bytes) {
        if (pending_unk) add(*options_.unk_id), pending_unk = false;
        for (unsigned char b : ch) add(byte_ids_[b]);
        continue;
      }
    }
    if (options_.unk_id.has_value()) {
      if (pending_unk && !options_.fuse_unk) add(*options_.unk_id);
      pending_unk = true;
    }
  }
  if (pending_unk) add(*options_.unk_id);

  // 2. Merge by rank.
  std::vector<HeapEntry> storage;
  storage.reserve(symbols.size());
  std::priority_queue<HeapEntry> heap(std::less<HeapEntry>(), std::move(storage));
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = FindMerge(symbols[i].id, symbols[i + 1].id)) {
      heap.push(HeapEntry{m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* current = FindMerge(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.live = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = FindMerge(symbols[left.prev].id, left.id)) {
        heap.push(HeapEntry{m->rank, left.prev, m->new_id});
      }
    }
    if (left.next >= 0) {
      if (const Merge* m = FindMerge(left.id, symbols[left.next].id)) {
        heap.push(HeapEntry{m->rank, top.pos, m->new_id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.live) ids->push_back(s.id);
  }
}

}  // namespace tandem::tokenizer_internal
