// Minimal HTTP/1.1 request-line parsing and response formatting (see
// http_request.h). Stateless.
#include "common/metrics/http_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem::metrics {
namespace {

// RFC 9110 tchar, the characters of a method token.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

}  // namespace

size_t FindHeadEnd(absl::string_view data) {
  const size_t crlf = data.find("\r\n\r\n");
  const size_t lf = data.find("\n\n");
  size_t end = absl::string_view::npos;
  if (crlf != absl::string_view::npos) end = crlf + 4;
  if (lf != absl::string_view::npos) end = std::min(end, lf + 2);
  return end;
}

absl::StatusOr<HttpRequestLine> ParseRequestLine(absl::string_view head) {
  absl::string_view line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == absl::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == absl::string_view::npos || line.find(' ', sp2 + 1) != absl::string_view::npos) {
    return absl::InvalidArgumentError("request line is not METHOD TARGET VERSION");
  }
  HttpRequestLine r;
  r.method = std::string(line.substr(0, sp1));
  const absl::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  r.version = std::string(line.substr(sp2 + 1));
  if (r.method.empty() || !std::all_of(r.method.begin(), r.method.end(), IsTokenChar)) {
    return absl::InvalidArgumentError("bad method");
  }
  if (target.empty() || target.front() != '/') return absl::InvalidArgumentError("target is not a path");
  if (r.version != "HTTP/1.1" && r.version != "HTTP/1.0") return absl::InvalidArgumentError("not HTTP/1.x");
  r.path = std::string(target.substr(0, target.find('?')));
  return r;
}

std::string FormatResponse(int status, absl::string_view reason, absl::string_view content_type, absl::string_view body,
                           absl::string_view extra_headers) {
  return absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n", extra_headers, "\r\n", body);
}

}  // namespace tandem::metrics
