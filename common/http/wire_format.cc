// Response heads and chunks (see wire_format.h).
#include "common/http/wire_format.h"

#include <boost/beast/http/status.hpp>

#include <strings.h>

#include <cstdio>

namespace tandem::http {
namespace {

bool HasLineBreak(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// Headers the caller may not set: the server owns the framing and its name.
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool Reserved(std::string_view name) {
  return EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "transfer-encoding") ||
         EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "server");
}

void AppendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

std::string_view Reason(int status) {
  namespace bhttp = boost::beast::http;
  const bhttp::status s = bhttp::int_to_status(static_cast<unsigned>(status));
  if (s == bhttp::status::unknown) return "Unknown";
  const auto r = bhttp::obsolete_reason(s);
  return std::string_view(r.data(), r.size());
}

}  // namespace

std::string ResponseHead(int status, std::string_view content_type, const Headers& extra, Framing framing,
                         size_t content_length, bool keep_alive) {
  if (status < 100 || status > 999) status = 500;  // a status line must carry three digits
  std::string head = "HTTP/1.1 " + std::to_string(status) + " ";
  head.append(Reason(status));
  head.append("\r\nServer: tandem\r\n");
  if (!content_type.empty() && !HasLineBreak(content_type)) AppendHeader(&head, "Content-Type", content_type);
  for (const auto& [name, value] : extra) {
    if (name.empty() || HasLineBreak(name) || name.find(':') != std::string::npos || HasLineBreak(value) ||
        Reserved(name)) {
      continue;
    }
    AppendHeader(&head, name, value);
  }
  switch (framing) {
    case Framing::kContentLength:
      AppendHeader(&head, "Content-Length", std::to_string(content_length));
      break;
    case Framing::kChunked:
      head += "Transfer-Encoding: chunked\r\n";
      break;
    case Framing::kUntilClose:
      break;
  }
  if (!keep_alive) head += "Connection: close\r\n";
  head += "\r\n";
  return head;
}

std::string Chunk(std::string_view data) {
  char size[24];
  const int n = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<size_t>(n) + data.size() + 2);
  out.append(size, static_cast<size_t>(n));
  out.append(data);
  out += "\r\n";
  return out;
}

std::string PlainTextReply(int status, std::string_view text) {
  return ResponseHead(status, "text/plain", {}, Framing::kContentLength, text.size(), /*keep_alive=*/false) +
         std::string(text);
}

}  // namespace tandem::http
