#include "router/client_status.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ToClientStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnauthenticated:
      return status;
    default:
      return absl::UnavailableError(absl::StrCat("the request was lost by a worker; retry (",
                                                 absl::StatusCodeToString(status.code()), ": ", status.message(),
                                                 ")"));
  }
}

std::vector<std::pair<std::string, std::string>> ClientTrailers(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kResourceExhausted) return {};
  return RetryTrailers(kRetryPushbackMs);
}

std::vector<std::pair<std::string, std::string>> RetryTrailers(int64_t retry_after_ms) {
  if (retry_after_ms < 0) return {};
  return {{"grpc-retry-pushback-ms", std::to_string(retry_after_ms)}};
}

}  // namespace tandem
