// Normalizer steps; see normalizer.h.
#include "engine/tokenizer/normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/split_regex.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer_internal {
namespace {

using Json = nlohmann::json;

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& step : steps_) {
      if (absl::Status status = step->Normalize(text); !status.ok()) return status;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) *text = absl::StrCat(prefix_, *text);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceStringNormalizer : public Normalizer {
 public:
  ReplaceStringNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  absl::Status Normalize(std::string* text) const override {
    *text = absl::StrReplaceAll(*text, {{from_, to_}});
    return absl::OkStatus();
  }

 private:
  std::string from_;
  std::string to_;
};

class ReplaceRegexNormalizer : public Normalizer {
 public:
  ReplaceRegexNormalizer(std::unique_ptr<SplitRegex> regex, std::string to)
      : regex_(std::move(regex)), to_(std::move(to)) {}
  absl::Status Normalize(std::string* text) const override {
    absl::StatusOr<std::string> replaced = regex_->ReplaceAll(*text, to_);
    if (!replaced.ok()) return replaced.status();
    *text = *std::move(replaced);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<SplitRegex> regex_;
  std::string to_;  // inserted literally
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    if (right_) text->resize(text->size() - TrailingWhitespaceLen(*text));
    if (left_) text->erase(0, LeadingWhitespaceLen(*text));
    return absl::OkStatus();
  }

 private:
  bool left_;
  bool right_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* impl) : impl_(impl) {}
  absl::Status Normalize(std::string* text) const override {
    UErrorCode error = U_ZERO_ERROR;
    const icu::UnicodeString input = icu::UnicodeString::fromUTF8(*text);
    if (impl_->isNormalized(input, error) && U_SUCCESS(error)) return absl::OkStatus();
    error = U_ZERO_ERROR;
    const icu::UnicodeString output = impl_->normalize(input, error);
    if (U_FAILURE(error)) return absl::OkStatus();  // leave the text as it is
    text->clear();
    output.toUTF8String(*text);
    return absl::OkStatus();
  }

 private:
  const icu::Normalizer2* impl_;  // owned by ICU, lives for the process
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(const std::string& type) {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* impl = nullptr;
  if (type == "NFC") impl = icu::Normalizer2::getNFCInstance(error);
  if (type == "NFD") impl = icu::Normalizer2::getNFDInstance(error);
  if (type == "NFKC") impl = icu::Normalizer2::getNFKCInstance(error);
  if (type == "NFKD") impl = icu::Normalizer2::getNFKDInstance(error);
  if (impl == nullptr || U_FAILURE(error)) {
    return absl::InternalError(absl::StrCat("normalizer ", type, ": ICU failed: ", u_errorName(error)));
  }
  return std::make_unique<UnicodeNormalizer>(impl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& config) {
  if (config.is_null()) return nullptr;
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const Json& item : config.at("normalizers")) {
      auto step = ParseNormalizer(item);
      if (!step.ok()) return step.status();
      if (*step != nullptr) steps.push_back(std::move(*step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(config.at("prepend").get<std::string>());
  if (type == "Replace") {
    const Json& pattern = config.at("pattern");
    std::string content = config.at("content").get<std::string>();
    if (pattern.contains("String")) {
      std::string from = pattern.at("String").get<std::string>();
      if (from.empty()) return absl::InvalidArgumentError("normalizer Replace: empty pattern");
      return std::make_unique<ReplaceStringNormalizer>(std::move(from), std::move(content));
    }
    if (pattern.contains("Regex")) {
      auto regex = SplitRegex::Create(pattern.at("Regex").get<std::string>());
      if (!regex.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("normalizer Replace: ", regex.status().message()));
      }
      return std::make_unique<ReplaceRegexNormalizer>(*std::move(regex), std::move(content));
    }
    return absl::InvalidArgumentError("normalizer Replace: pattern needs 'String' or 'Regex'");
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(config.value("strip_left", true), config.value("strip_right", true));
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") return MakeUnicodeNormalizer(type);
  return absl::InvalidArgumentError(absl::StrCat("unsupported normalizer type '", type, "'"));
}

}  // namespace tandem::tokenizer_internal
