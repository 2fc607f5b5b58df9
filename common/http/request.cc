// Request::Header (see http_server.h).
#include "common/http/http_server.h"

namespace tandem::http {

std::string_view Request::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return {};
}

}  // namespace tandem::http
