// Decoder steps; see decoder.h.
#include "engine/tokenizer/decoder.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/split_regex.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer_internal {
namespace {

using Json = nlohmann::json;

void FuseAll(std::vector<std::string>* tokens, DecodeContext* context) {
  std::string joined = absl::StrJoin(*tokens, "");
  tokens->assign(1, std::move(joined));
  context->fused = true;
}

// Each token's characters map back to bytes; a token with a character
// outside the byte alphabet (an added token) keeps its own bytes. Fuses.
class ByteLevelStep : public DecoderStep {
 public:
  void Apply(std::vector<std::string>* tokens, DecodeContext* context) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      if (!AlphabetToBytes(token, &bytes)) bytes += token;
    }
    tokens->assign(1, std::move(bytes));
    context->fused = true;
  }
};

class ReplaceStringStep : public DecoderStep {
 public:
  ReplaceStringStep(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void Apply(std::vector<std::string>* tokens, DecodeContext*) const override {
    for (std::string& token : *tokens) token = absl::StrReplaceAll(token, {{from_, to_}});
  }

 private:
  std::string from_;
  std::string to_;
};

// A token on which the regex hits its limits stays as it is (see decoder.h).
class ReplaceRegexStep : public DecoderStep {
 public:
  ReplaceRegexStep(std::unique_ptr<SplitRegex> regex, std::string to) : regex_(std::move(regex)), to_(std::move(to)) {}
  void Apply(std::vector<std::string>* tokens, DecodeContext*) const override {
    for (std::string& token : *tokens) {
      absl::StatusOr<std::string> replaced = regex_->ReplaceAll(token, to_);
      if (replaced.ok()) token = *std::move(replaced);
    }
  }

 private:
  std::unique_ptr<SplitRegex> regex_;
  std::string to_;  // inserted literally
};

// Runs of "<0xXX>" tokens become one token of those raw bytes.
class ByteFallbackStep : public DecoderStep {
 public:
  void Apply(std::vector<std::string>* tokens, DecodeContext*) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    bool in_run = false;
    for (std::string& token : *tokens) {
      int byte = -1;
      if (token.size() == 6 && token.starts_with("<0x") && token.back() == '>') byte = HexByte(token[3], token[4]);
      if (byte < 0) {
        out.push_back(std::move(token));
        in_run = false;
        continue;
      }
      if (!in_run) out.emplace_back();
      out.back().push_back(static_cast<char>(byte));
      in_run = true;
    }
    *tokens = std::move(out);
  }

 private:
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }
  static int HexByte(char hi, char lo) {
    const int h = HexDigit(hi), l = HexDigit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseStep : public DecoderStep {
 public:
  void Apply(std::vector<std::string>* tokens, DecodeContext* context) const override { FuseAll(tokens, context); }
};

// Cuts up to `start` leading and `stop` trailing copies of `content` from
// each token.
class StripStep : public DecoderStep {
 public:
  StripStep(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>* tokens, DecodeContext* context) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      const bool at_text_start = i == 0 && context->fused;
      if (!(at_text_start && context->continuation)) {
        for (size_t n = 0; n < start_ && token.starts_with(content_); ++n) token.erase(0, content_.size());
      }
      for (size_t n = 0; n < stop_ && token.ends_with(content_); ++n) token.resize(token.size() - content_.size());
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

class MetaspaceStep : public DecoderStep {
 public:
  MetaspaceStep(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Apply(std::vector<std::string>* tokens, DecodeContext* context) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      token = absl::StrReplaceAll(token, {{replacement_, " "}});
      if (i == 0 && strip_first_ && !context->continuation && token.starts_with(' ')) token.erase(0, 1);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;  // prepend_scheme != "never"
};

class SequenceStep : public DecoderStep {
 public:
  explicit SequenceStep(std::vector<std::unique_ptr<DecoderStep>> steps) : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>* tokens, DecodeContext* context) const override {
    for (const auto& step : steps_) step->Apply(tokens, context);
  }

 private:
  std::vector<std::unique_ptr<DecoderStep>> steps_;
};

absl::StatusOr<std::unique_ptr<DecoderStep>> ParseStep(const Json& config) {
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<DecoderStep>> steps;
    for (const Json& item : config.at("decoders")) {
      auto step = ParseStep(item);
      if (!step.ok()) return step.status();
      steps.push_back(std::move(*step));
    }
    return std::make_unique<SequenceStep>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelStep>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackStep>();
  if (type == "Fuse") return std::make_unique<FuseStep>();
  if (type == "Strip") {
    return std::make_unique<StripStep>(config.at("content").get<std::string>(), config.value("start", size_t{0}),
                                       config.value("stop", size_t{0}));
  }
  if (type == "Replace") {
    const Json& pattern = config.at("pattern");
    std::string content = config.at("content").get<std::string>();
    if (pattern.contains("String")) {
      std::string from = pattern.at("String").get<std::string>();
      if (from.empty()) return absl::InvalidArgumentError("decoder Replace: empty pattern");
      return std::make_unique<ReplaceStringStep>(std::move(from), std::move(content));
    }
    if (pattern.contains("Regex")) {
      auto regex = SplitRegex::Create(pattern.at("Regex").get<std::string>());
      if (!regex.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("decoder Replace: ", regex.status().message()));
      }
      return std::make_unique<ReplaceRegexStep>(*std::move(regex), std::move(content));
    }
    return absl::InvalidArgumentError("decoder Replace: pattern needs 'String' or 'Regex'");
  }
  if (type == "Metaspace") {
    bool strip_first = config.value("add_prefix_space", true);
    if (config.contains("prepend_scheme")) strip_first = config.at("prepend_scheme").get<std::string>() != "never";
    return std::make_unique<MetaspaceStep>(config.value("replacement", "\xE2\x96\x81"), strip_first);
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported decoder type '", type, "'"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json& config) {
  if (config.is_null()) return std::unique_ptr<Decoder>(new Decoder(nullptr));
  auto step = ParseStep(config);
  if (!step.ok()) return step.status();
  return std::unique_ptr<Decoder>(new Decoder(std::move(*step)));
}

std::string Decoder::Decode(std::vector<std::string> tokens, bool continuation) const {
  if (step_ == nullptr) {
    // HuggingFace joins with spaces; a continuation starts with the space
    // that joins it to the earlier text.
    if (tokens.empty()) return "";
    return ToValidUtf8(absl::StrCat(continuation ? " " : "", absl::StrJoin(tokens, " ")));
  }
  DecodeContext context;
  context.continuation = continuation;
  step_->Apply(&tokens, &context);
  std::string joined;
  for (const std::string& t : tokens) joined += t;
  return ToValidUtf8(joined);
}

}  // namespace tandem::tokenizer_internal
