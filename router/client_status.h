// The status codes a client of the public API may see (a contract, listed in
// proto/tandem/v1/generation.proto and docs/architecture.md, invariant 6):
// OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED (overload; with a retry hint),
// UNAVAILABLE (no worker, a worker died or lost the request: retry),
// DEADLINE_EXCEEDED, CANCELLED, UNAUTHENTICATED. Whatever else a worker or a
// transport reports (NOT_FOUND for a reservation that expired, INTERNAL for a
// stream that broke, UNKNOWN, ABORTED, ...) reaches the client as
// UNAVAILABLE: for load, timing or a worker's death the client's move is to
// retry, and nothing else it could do depends on the worker's code.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace tandem {

// How long a client told RESOURCE_EXHAUSTED should wait before retrying
// (gRPC's `grpc-retry-pushback-ms` trailing metadata, which gRPC's own retry
// policy honours).
inline constexpr int64_t kRetryPushbackMs = 1000;

absl::Status ToClientStatus(const absl::Status& status);

// Trailing metadata for a call ending with `status`: the retry pushback for
// RESOURCE_EXHAUSTED, nothing otherwise.
std::vector<std::pair<std::string, std::string>> ClientTrailers(const absl::Status& status);
// The retry pushback trailer for a wait of `retry_after_ms` (none when < 0:
// retrying cannot help).
std::vector<std::pair<std::string, std::string>> RetryTrailers(int64_t retry_after_ms);

}  // namespace tandem
