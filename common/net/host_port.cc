#include "common/net/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tandem::net {

std::string JoinHostPort(absl::string_view host, int64_t port) {
  const bool bracket = host.find(':') != absl::string_view::npos && !host.empty() && host.front() != '[';
  return bracket ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address) {
  auto invalid = [address](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "': ", why));
  };
  absl::string_view host, port;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) return invalid("'[' without ']'");
    if (close + 1 >= address.size() || address[close + 1] != ':') return invalid("expected ':PORT' after ']'");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) return invalid("expected HOST:PORT");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) return invalid("an IPv6 host must be bracketed: [HOST]:PORT");
  }
  if (host.empty()) return invalid("empty host");
  int value = 0;
  // SimpleAtoi accepts a sign and surrounding spaces; a port is digits only.
  if (port.empty() || port.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(port, &value) || value > 65535) {
    return invalid("the port must be a number in [0, 65535]");
  }
  return std::make_pair(std::string(host), value);
}

}  // namespace tandem::net
