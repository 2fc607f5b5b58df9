// Reading the file a flag names (certificates, keys, key lists), with an
// error that names the flag. Thread-safety: a pure function.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::cli {

// The whole of `path`. InvalidArgument "--<flag>: cannot read <path>" when
// it cannot be opened (missing, unreadable, a directory).
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path);

}  // namespace tandem::cli
