// The little HTTP/1.1 the metrics endpoint needs: finding the end of a
// request head, parsing its request line, and formatting a complete
// response. Kept apart from the socket code so parsing is tested directly.
// Thread-safety: stateless functions.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::metrics {

struct HttpRequestLine {
  std::string method;   // "GET"
  std::string path;     // "/metrics" (the target without its ?query)
  std::string version;  // "HTTP/1.1"
};

// The length of the request head in `data` including its blank line (CRLF
// CRLF, or a bare LF LF from lenient clients), or absl::string_view::npos
// while the head is incomplete.
size_t FindHeadEnd(absl::string_view data);

// Parses the first line of `head`: METHOD SP origin-form-target SP HTTP/1.x.
// InvalidArgument for anything else (the server answers 400).
absl::StatusOr<HttpRequestLine> ParseRequestLine(absl::string_view head);

// A whole response with Content-Length and Connection: close. `extra_headers`
// is zero or more "Name: value\r\n" lines.
std::string FormatResponse(int status, absl::string_view reason, absl::string_view content_type, absl::string_view body,
                           absl::string_view extra_headers = {});

}  // namespace tandem::metrics
