// The public API's key flags, shared by tandem-router, `tandem serve` and
// `tandem up` (which passes them to its router): --api-key-file and the
// default per-key limits (router/api_keys.h has the file format).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/cli/cli_flags.h"
#include "router/api_keys.h"

namespace tandem::cli {

struct ApiKeyFlags {
  std::string api_key_file;
  int64_t max_streams_per_key = 0;
  int64_t tokens_per_minute_per_key = 0;

  void Register(FlagSet& f);
  // The keys, or null when no --api-key-file was given (the API is open).
  // InvalidArgument naming the flag or the file's line.
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> Load() const;
};

// On SIGHUP: re-reads the keys (if any) and says on stdout/stderr what came
// of it, as `who` (the program's name). Never prints a key.
void ReloadApiKeys(ApiKeyAuth* auth, const std::string& who);
// Between signals: re-reads the keys when their file changed (a rotated
// Kubernetes Secret), saying so as ReloadApiKeys does. Null: nothing.
void ReloadApiKeysIfChanged(ApiKeyAuth* auth, const std::string& who);

}  // namespace tandem::cli
