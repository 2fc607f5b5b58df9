// Pre-tokenizer steps; see pre_tokenizer.h.
#include "engine/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/split_regex.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer_internal {
namespace {

using Json = nlohmann::json;
using Span = std::pair<size_t, size_t>;

// GPT-2's pattern, used by ByteLevel with use_regex.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer Split: unknown behavior '", name, "'"));
}

// Cuts `text` at the matches of `regex` the way NormalizedString::split does:
// the matches and the gaps between them are flagged, `invert` swaps the
// flags, `behavior` decides what becomes of the flagged parts. Returns the
// kept non-empty spans, or the regex's error.
absl::StatusOr<std::vector<Span>> SplitSpans(std::string_view text, const SplitRegex& regex, Behavior behavior,
                                             bool invert) {
  std::vector<Span> found;
  if (absl::Status status = regex.FindMatches(text, &found); !status.ok()) return status;
  std::vector<std::pair<Span, bool>> parts;  // (span, is_match)
  size_t prev = 0;
  for (const Span& m : found) {
    if (prev != m.first) parts.push_back({{prev, m.first}, invert});
    parts.push_back({m, !invert});
    prev = m.second;
  }
  if (prev != text.size() || text.empty()) parts.push_back({{prev, text.size()}, invert});

  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const auto& [span, is_match] : parts) {
        if (!is_match) out.push_back(span);
      }
      break;
    case Behavior::kIsolated:
      for (const auto& [span, is_match] : parts) out.push_back(span);
      break;
    case Behavior::kMergedWithPrevious:
      for (const auto& [span, is_match] : parts) {
        if (is_match && !previous_match && !out.empty()) {
          out.back().second = span.second;
        } else {
          out.push_back(span);
        }
        previous_match = is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->second && !previous_match && !out.empty()) {
          out.back().first = it->first.first;
        } else {
          out.push_back(it->first);
        }
        previous_match = it->second;
      }
      std::reverse(out.begin(), out.end());
      break;
    case Behavior::kContiguous:
      for (const auto& [span, is_match] : parts) {
        if (is_match == previous_match && !out.empty()) {
          out.back().second = span.second;
        } else {
          out.push_back(span);
        }
        previous_match = is_match;
      }
      break;
  }
  std::erase_if(out, [](const Span& s) { return s.first == s.second; });
  return out;
}

// Applies `fn(piece, &out)` (which returns an absl::Status) to every piece,
// replacing the list; stops at the first error.
template <typename Fn>
absl::Status ForEachPiece(std::vector<PreToken>* pieces, Fn fn) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  for (PreToken& piece : *pieces) {
    if (absl::Status status = fn(piece, &out); !status.ok()) return status;
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

void AppendSpans(const PreToken& piece, const std::vector<Span>& spans, std::vector<PreToken>* out) {
  for (const Span& s : spans) {
    out->push_back({piece.text.substr(s.first, s.second - s.first), piece.at_start && s.first == 0});
  }
}

class SplitStep : public PreTokenizer {
 public:
  SplitStep(std::unique_ptr<SplitRegex> regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  absl::Status Apply(std::vector<PreToken>* pieces) const override {
    return ForEachPiece(pieces, [&](PreToken& piece, std::vector<PreToken>* out) -> absl::Status {
      absl::StatusOr<std::vector<Span>> spans = SplitSpans(piece.text, *regex_, behavior_, invert_);
      if (!spans.ok()) return spans.status();
      AppendSpans(piece, *spans, out);
      return absl::OkStatus();
    });
  }

 private:
  std::unique_ptr<SplitRegex> regex_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelStep : public PreTokenizer {
 public:
  ByteLevelStep(bool add_prefix_space, std::unique_ptr<SplitRegex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  absl::Status Apply(std::vector<PreToken>* pieces) const override {
    return ForEachPiece(pieces, [&](PreToken& piece, std::vector<PreToken>* out) -> absl::Status {
      if (add_prefix_space_ && !piece.text.starts_with(' ')) piece.text = absl::StrCat(" ", piece.text);
      std::vector<Span> spans;
      if (regex_ != nullptr) {
        absl::StatusOr<std::vector<Span>> found = SplitSpans(piece.text, *regex_, Behavior::kIsolated, false);
        if (!found.ok()) return found.status();
        spans = *std::move(found);
      } else if (!piece.text.empty()) {
        spans.push_back({0, piece.text.size()});
      }
      for (const Span& s : spans) {
        PreToken mapped{"", piece.at_start && s.first == 0};
        BytesToAlphabet(std::string_view(piece.text).substr(s.first, s.second - s.first), &mapped.text);
        out->push_back(std::move(mapped));
      }
      return absl::OkStatus();
    });
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitRegex> regex_;  // null without use_regex
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspaceStep : public PreTokenizer {
 public:
  MetaspaceStep(std::string replacement, PrependScheme scheme, std::unique_ptr<SplitRegex> split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(std::move(split)) {}
  absl::Status Apply(std::vector<PreToken>* pieces) const override {
    return ForEachPiece(pieces, [&](PreToken& piece, std::vector<PreToken>* out) -> absl::Status {
      piece.text = absl::StrReplaceAll(piece.text, {{" ", replacement_}});
      const bool prepend = !piece.text.starts_with(replacement_) &&
                           (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && piece.at_start));
      if (prepend) piece.text = absl::StrCat(replacement_, piece.text);
      if (split_ != nullptr) {
        absl::StatusOr<std::vector<Span>> spans = SplitSpans(piece.text, *split_, Behavior::kMergedWithNext, false);
        if (!spans.ok()) return spans.status();
        AppendSpans(piece, *spans, out);
      } else if (!piece.text.empty()) {
        out->push_back(std::move(piece));
      }
      return absl::OkStatus();
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<SplitRegex> split_;  // null without split
};

class SequenceStep : public PreTokenizer {
 public:
  explicit SequenceStep(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  absl::Status Apply(std::vector<PreToken>* pieces) const override {
    for (const auto& step : steps_) {
      if (absl::Status status = step->Apply(pieces); !status.ok()) return status;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeRegexStep(std::string_view pattern, Behavior behavior, bool invert) {
  auto regex = SplitRegex::Create(pattern);
  if (!regex.ok()) return regex.status();
  return std::make_unique<SplitStep>(std::move(*regex), behavior, invert);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& config) {
  if (config.is_null()) return nullptr;
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const Json& item : config.at("pretokenizers")) {
      auto step = ParsePreTokenizer(item);
      if (!step.ok()) return step.status();
      if (*step != nullptr) steps.push_back(std::move(*step));
    }
    return std::make_unique<SequenceStep>(std::move(steps));
  }
  if (type == "Split") {
    auto behavior = ParseBehavior(config.value("behavior", "Isolated"));
    if (!behavior.ok()) return behavior.status();
    const bool invert = config.value("invert", false);
    const Json& pattern = config.at("pattern");
    absl::StatusOr<std::unique_ptr<SplitRegex>> regex;
    if (pattern.contains("Regex")) {
      regex = SplitRegex::Create(pattern.at("Regex").get<std::string>());
    } else if (pattern.contains("String")) {
      regex = SplitRegex::CreateLiteral(pattern.at("String").get<std::string>());
    } else {
      return absl::InvalidArgumentError("pre_tokenizer Split: pattern needs 'Regex' or 'String'");
    }
    if (!regex.ok()) return regex.status();
    return std::make_unique<SplitStep>(std::move(*regex), *behavior, invert);
  }
  if (type == "ByteLevel") {
    std::unique_ptr<SplitRegex> regex;
    if (config.value("use_regex", true)) {
      auto created = SplitRegex::Create(kGpt2Pattern);
      if (!created.ok()) return created.status();
      regex = std::move(*created);
    }
    return std::make_unique<ByteLevelStep>(config.value("add_prefix_space", false), std::move(regex));
  }
  if (type == "Digits") {
    // char::is_numeric digits, isolated one by one or kept together.
    return MakeRegexStep("\\p{N}",
                         config.value("individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous, false);
  }
  if (type == "Punctuation") {
    auto behavior = ParseBehavior(config.value("behavior", "Isolated"));
    if (!behavior.ok()) return behavior.status();
    return MakeRegexStep("[\\p{P}!-/:-@\\[-`{-~]", *behavior, false);
  }
  if (type == "WhitespaceSplit") return MakeRegexStep("\\s", Behavior::kRemoved, false);
  if (type == "Whitespace") return MakeRegexStep("\\w+|[^\\w\\s]+", Behavior::kRemoved, true);
  if (type == "Metaspace") {
    const std::string replacement = config.value("replacement", "\xE2\x96\x81");
    PrependScheme scheme = config.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    if (config.contains("prepend_scheme")) {
      const std::string name = config.at("prepend_scheme").get<std::string>();
      if (name == "always") {
        scheme = PrependScheme::kAlways;
      } else if (name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (name == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer Metaspace: unknown prepend_scheme '", name, "'"));
      }
    }
    std::unique_ptr<SplitRegex> split;
    if (config.value("split", true)) {
      auto created = SplitRegex::CreateLiteral(replacement);
      if (!created.ok()) return created.status();
      split = std::move(*created);
    }
    return std::make_unique<MetaspaceStep>(replacement, scheme, std::move(split));
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported pre_tokenizer type '", type, "'"));
}

}  // namespace tandem::tokenizer_internal
