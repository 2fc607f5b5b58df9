// "host:port" strings for gRPC addresses, IPv6-safe: an IPv6 literal must be
// bracketed ("[fd00::5]:50052"), or the last colon of the address would be
// read as the port separator. Every address Tandem builds or parses goes
// through these two functions.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::net {

// "host:port", with `host` bracketed when it is an IPv6 literal (it contains
// a colon and is not bracketed already): ("fd00::5", 80) -> "[fd00::5]:80".
std::string JoinHostPort(absl::string_view host, int64_t port);

// The inverse: "[fd00::5]:80" -> ("fd00::5", 80), "10.0.0.1:80" and
// "name:80" -> (host, 80). The host comes back without brackets.
// InvalidArgument (naming the address) for a missing or non-numeric port, a
// port outside [0, 65535], an empty host, or an unbracketed IPv6 literal
// ("fd00::5:80" is ambiguous).
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address);

}  // namespace tandem::net
