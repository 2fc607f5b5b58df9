#include "common/cli/cli_flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tandem::cli {
namespace {

absl::Status BadValue(const std::string& name, const std::string& value, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", value, "' is not ", want));
}

}  // namespace

absl::Status ParseIntList(const std::string& text, std::vector<int32_t>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v)) {
      return absl::InvalidArgumentError(absl::StrCat("'", part, "' is not an integer"));
    }
    out->push_back(v);
  }
  return absl::OkStatus();
}

void FlagSet::AddString(const std::string& name, std::string* target, const std::string& help) {
  flags_[name] = {false, help, [target](const std::string& v) {
                    *target = v;
                    return absl::OkStatus();
                  }};
}

void FlagSet::AddInt(const std::string& name, int64_t* target, const std::string& help) {
  flags_[name] = {false, help, [name, target](const std::string& v) {
                    return absl::SimpleAtoi(v, target) ? absl::OkStatus() : BadValue(name, v, "an integer");
                  }};
}

void FlagSet::AddUint64(const std::string& name, std::optional<uint64_t>* target, const std::string& help) {
  flags_[name] = {false, help, [name, target](const std::string& v) {
                    uint64_t x;
                    if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "a non-negative integer");
                    *target = x;
                    return absl::OkStatus();
                  }};
}

void FlagSet::AddFloat(const std::string& name, std::optional<float>* target, const std::string& help) {
  flags_[name] = {false, help, [name, target](const std::string& v) {
                    float x;
                    if (!absl::SimpleAtof(v, &x)) return BadValue(name, v, "a number");
                    *target = x;
                    return absl::OkStatus();
                  }};
}

void FlagSet::AddBool(const std::string& name, bool* target, const std::string& help) {
  flags_[name] = {true, help, [name, target](const std::string& v) {
                    if (v.empty() || v == "true" || v == "1") {
                      *target = true;
                    } else if (v == "false" || v == "0") {
                      *target = false;
                    } else {
                      return BadValue(name, v, "true or false");
                    }
                    return absl::OkStatus();
                  }};
}

void FlagSet::AddStringList(const std::string& name, std::vector<std::string>* target,
                            const std::string& help) {
  flags_[name] = {false, help, [target](const std::string& v) {
                    target->push_back(v);
                    return absl::OkStatus();
                  }};
}

void FlagSet::AddIntList(const std::string& name, std::vector<int32_t>* target, const std::string& help) {
  flags_[name] = {false, help, [name, target](const std::string& v) {
                    absl::Status st = ParseIntList(v, target);
                    if (!st.ok()) return BadValue(name, v, "a comma-separated list of integers");
                    return absl::OkStatus();
                  }};
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (!value) {
      if (it->second.is_bool) {
        value = "";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    if (absl::Status st = it->second.set(*value); !st.ok()) return st;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const auto& [name, flag] : flags_) absl::StrAppend(&out, "  --", name, "  ", flag.help, "\n");
  return out;
}

}  // namespace tandem::cli
