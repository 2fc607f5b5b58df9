// MetricsServer: POSIX sockets, poll(2) with deadlines, one thread (see
// metrics_server.h for the bounds). Thread-safety as in the header.
#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/metrics/http_request.h"
#include "common/metrics/text_format.h"

namespace tandem::metrics {
namespace {

using Clock = std::chrono::steady_clock;

// After answering, how much of what the client still sends is read and
// dropped before closing. Closing with unread data makes the kernel send a
// reset, which can destroy the answer before the client reads it (a 431 to a
// client still sending its oversized head); draining first avoids that.
constexpr size_t kMaxDrainBytes = 64 * 1024;
constexpr std::chrono::milliseconds kMaxDrainTime{1000};

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Fills `storage` from a numeric address; false when it is not one.
bool ParseAddress(const std::string& address, int port, sockaddr_storage* storage, socklen_t* len) {
  std::memset(storage, 0, sizeof(*storage));
  auto* v4 = reinterpret_cast<sockaddr_in*>(storage);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(storage);
  if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  // Rounded up so a sub-millisecond remainder still waits rather than spins.
  return static_cast<int>(std::clamp<int64_t>(left + 1, 0, 1 << 30));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const Registry* registry,
                                                                    MetricsServerOptions options) {
  if (registry == nullptr) return absl::InvalidArgumentError("metrics server: no registry");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics server: port ", options.port, " not in [0, 65535]"));
  }
  if (options.read_timeout.count() <= 0) return absl::InvalidArgumentError("metrics server: read_timeout must be > 0");
  if (options.max_request_bytes < 16) return absl::InvalidArgumentError("metrics server: max_request_bytes < 16");
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  if (!ParseAddress(options.bind_address, options.port, &addr, &addr_len)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: '", options.bind_address, "' is not a numeric IPv4 or IPv6 address"));
  }
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("metrics server: socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // rebinding right after a restart
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 || listen(fd, 16) != 0) {
    const absl::Status st = absl::UnavailableError(absl::StrCat("metrics server: cannot listen on ",
                                                                options.bind_address, ":", options.port, ": ",
                                                                std::strerror(errno)));
    close(fd);
    return st;
  }
  sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    const absl::Status st = Errno("metrics server: getsockname");
    close(fd);
    return st;
  }
  const int port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                                    : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    const absl::Status st = Errno("metrics server: pipe");
    close(fd);
    return st;
  }
  std::unique_ptr<MetricsServer> server(
      new MetricsServer(registry, std::move(options), fd, port, wake[0], wake[1]));
  try {
    server->thread_ = std::thread([s = server.get()] { s->Run(); });
  } catch (const std::system_error& e) {
    return absl::InternalError(absl::StrCat("metrics server: thread: ", e.what()));  // the destructor closes the fds
  }
  return server;
}

MetricsServer::MetricsServer(const Registry* registry, MetricsServerOptions options, int listen_fd, int port,
                             int wake_read_fd, int wake_write_fd)
    : registry_(registry),
      options_(std::move(options)),
      listen_fd_(listen_fd),
      port_(port),
      wake_read_fd_(wake_read_fd),
      wake_write_fd_(wake_write_fd) {}

MetricsServer::~MetricsServer() { Stop(); }

std::string MetricsServer::address() const {
  if (options_.bind_address.find(':') != std::string::npos) return absl::StrCat("[", options_.bind_address, "]:", port_);
  return absl::StrCat(options_.bind_address, ":", port_);
}

void MetricsServer::Stop() {
  std::call_once(stop_once_, [this] {
    const char byte = 1;
    // The pipe is empty and non-blocking: this write cannot block or fail short.
    [[maybe_unused]] const ssize_t n = write(wake_write_fd_, &byte, 1);
    if (thread_.joinable()) thread_.join();
    close(listen_fd_);
    close(wake_read_fd_);
    close(wake_write_fd_);
  });
}

bool MetricsServer::WaitFor(int fd, short events, Clock::time_point deadline) const {
  pollfd fds[2] = {{fd, events, 0}, {wake_read_fd_, POLLIN, 0}};
  // Each pass either returns or has waited until an event or the deadline;
  // EINTR can only repeat it until the deadline passes.
  while (true) {
    const int timeout_ms = RemainingMs(deadline);
    if (timeout_ms == 0) return false;
    const int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (fds[1].revents != 0) return false;  // Stop()
    return fds[0].revents != 0;             // ready, or an error the next call reports
  }
}

void MetricsServer::Run() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_fd_, POLLIN, 0}};
    const int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || fds[1].revents != 0) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // A client that gave up already: next one. Anything else (out of fds)
      // would make poll return at once forever: back off, still stoppable.
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR) {
        pollfd wake = {wake_read_fd_, POLLIN, 0};
        if (poll(&wake, 1, 100) > 0) return;
      }
      continue;
    }
    ServeConnection(fd);
    close(fd);
  }
}

void MetricsServer::ServeConnection(int fd) {
  const Clock::time_point read_deadline = Clock::now() + options_.read_timeout;
  std::string data;
  char buf[4096];
  size_t head_end = std::string::npos;
  std::string answer;
  // Each pass reads at least one byte or ends the connection; the total is
  // capped at max_request_bytes + 1 and the time at read_timeout.
  while (head_end == std::string::npos) {
    if (data.size() > options_.max_request_bytes) {
      answer = FormatResponse(431, "Request Header Fields Too Large", "text/plain; charset=utf-8",
                              "request head too large\n");
      break;
    }
    if (!WaitFor(fd, POLLIN, read_deadline)) {
      if (Clock::now() < read_deadline) return;  // Stop() or a socket error
      answer = FormatResponse(408, "Request Timeout", "text/plain; charset=utf-8", "request timeout\n");
      break;
    }
    const size_t want = std::min(sizeof(buf), options_.max_request_bytes + 1 - data.size());
    const ssize_t n = recv(fd, buf, want, 0);
    if (n == 0) return;  // the client closed before a whole head: nobody to answer
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return;
    }
    data.append(buf, static_cast<size_t>(n));
    head_end = FindHeadEnd(data);
    if (head_end != std::string::npos && head_end > options_.max_request_bytes) head_end = std::string::npos;
  }
  if (answer.empty()) answer = Answer(absl::string_view(data).substr(0, head_end));
  if (!SendAll(fd, answer, Clock::now() + options_.read_timeout)) return;
  // Lingering close (see kMaxDrainBytes): no more writes, drop what still
  // arrives until the client closes, bounded in bytes and time.
  shutdown(fd, SHUT_WR);
  const Clock::time_point drain_deadline = Clock::now() + std::min(options_.read_timeout, kMaxDrainTime);
  for (size_t drained = 0; drained < kMaxDrainBytes;) {
    if (!WaitFor(fd, POLLIN, drain_deadline)) return;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) return;
    drained += n > 0 ? static_cast<size_t>(n) : 0;
  }
}

bool MetricsServer::SendAll(int fd, const std::string& data, Clock::time_point deadline) const {
  size_t sent = 0;
  // Each pass sends at least one byte or waits (bounded by the deadline).
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    if (!WaitFor(fd, POLLOUT, deadline)) return false;
  }
  return true;
}

std::string MetricsServer::Answer(absl::string_view head) const {
  absl::StatusOr<HttpRequestLine> line = ParseRequestLine(head);
  if (!line.ok()) {
    return FormatResponse(400, "Bad Request", "text/plain; charset=utf-8",
                          absl::StrCat("bad request: ", line.status().message(), "\n"));
  }
  if (line->method != "GET") {
    return FormatResponse(405, "Method Not Allowed", "text/plain; charset=utf-8", "only GET\n", "Allow: GET\r\n");
  }
  if (line->path != "/metrics") return FormatResponse(404, "Not Found", "text/plain; charset=utf-8", "not found\n");
  return FormatResponse(200, "OK", kTextFormatContentType, registry_->Serialize());
}

}  // namespace tandem::metrics
