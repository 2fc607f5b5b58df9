// A small command-line flag parser for `tandem <command> --flag value ...`.
//
// Flags are spelled with dashes (`--max-tokens 8` or `--max-tokens=8`), as
// users of vLLM's and TensorRT-LLM's tools expect. Each flag is bound to a
// typed variable; unknown flags, missing values and unparsable values are
// InvalidArgument naming the flag.
// Thread-safety: single-threaded use in main().
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tandem::cli {

class FlagSet {
 public:
  void AddString(const std::string& name, std::string* target, const std::string& help);
  void AddInt(const std::string& name, int64_t* target, const std::string& help);
  void AddUint64(const std::string& name, std::optional<uint64_t>* target, const std::string& help);
  void AddFloat(const std::string& name, std::optional<float>* target, const std::string& help);
  void AddBool(const std::string& name, bool* target, const std::string& help);
  // Repeatable: every occurrence appends its value.
  void AddStringList(const std::string& name, std::vector<std::string>* target, const std::string& help);
  // Comma-separated integers: "1,2,3".
  void AddIntList(const std::string& name, std::vector<int32_t>* target, const std::string& help);

  // Parses args (without the program and command names).
  absl::Status Parse(const std::vector<std::string>& args);
  // One line per flag, for --help.
  std::string Usage() const;
  bool Has(const std::string& name) const { return flags_.contains(name); }
  bool IsBool(const std::string& name) const { auto it = flags_.find(name); return it != flags_.end() && it->second.is_bool; }

 private:
  struct Flag {
    bool is_bool = false;
    std::string help;
    std::function<absl::Status(const std::string&)> set;
  };
  std::map<std::string, Flag> flags_;
};

// Parses "1,2,3" (spaces allowed). InvalidArgument on anything else.
absl::Status ParseIntList(const std::string& text, std::vector<int32_t>* out);

}  // namespace tandem::cli
