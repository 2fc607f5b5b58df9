#include "router/api_key_flags.h"

#include <iostream>

#include "absl/strings/str_cat.h"

namespace tandem::cli {

void ApiKeyFlags::Register(FlagSet& f) {
  f.AddString("api-key-file", &api_key_file,
              "require 'authorization: Bearer KEY' on the public API, KEY one of this file's lines (KEY "
              "[name=NAME] [max_streams=N] [tokens_per_minute=N]); re-read on SIGHUP (default: no keys, open)");
  f.AddInt("max-streams-per-key", &max_streams_per_key,
           "with --api-key-file: streams one key may hold open at once, unless its line says (default 0: no limit)");
  f.AddInt("tokens-per-minute-per-key", &tokens_per_minute_per_key,
           "with --api-key-file: prompt + max_tokens one key may start per minute, unless its line says (default 0: "
           "no limit)");
}

absl::StatusOr<std::unique_ptr<ApiKeyAuth>> ApiKeyFlags::Load() const {
  if (max_streams_per_key < 0 || tokens_per_minute_per_key < 0) {
    return absl::InvalidArgumentError("--max-streams-per-key and --tokens-per-minute-per-key must be >= 0");
  }
  if (api_key_file.empty()) {
    if (max_streams_per_key > 0 || tokens_per_minute_per_key > 0) {
      return absl::InvalidArgumentError("per-key limits need --api-key-file");
    }
    return std::unique_ptr<ApiKeyAuth>();
  }
  return ApiKeyAuth::Load(api_key_file, {max_streams_per_key, tokens_per_minute_per_key});
}

void ReloadApiKeys(ApiKeyAuth* auth, const std::string& who) {
  if (auth == nullptr) {
    std::cout << who << ": SIGHUP: no --api-key-file to reload" << std::endl;
    return;
  }
  if (absl::Status st = auth->Reload(); !st.ok()) {
    std::cerr << who << ": SIGHUP: kept the old API keys: " << st.message() << std::endl;
    return;
  }
  std::cout << who << ": SIGHUP: reloaded " << auth->num_keys() << " API keys" << std::endl;
}

void ReloadApiKeysIfChanged(ApiKeyAuth* auth, const std::string& who) {
  if (auth == nullptr) return;
  absl::StatusOr<bool> reloaded = auth->ReloadIfChanged();
  if (!reloaded.ok()) {
    std::cerr << who << ": the API key file changed; kept the old API keys: " << reloaded.status().message()
              << std::endl;
  } else if (*reloaded) {
    std::cout << who << ": the API key file changed: reloaded " << auth->num_keys() << " API keys" << std::endl;
  }
}

}  // namespace tandem::cli
