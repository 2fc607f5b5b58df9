// MetricsServer on civetweb (see metrics_server.h).
#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "CivetServer.h"
#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "common/metrics/text_serializer.h"
#include "common/net/host_port.h"
#include "prometheus/metric_family.h"

namespace tandem::metrics {
namespace {

// civetweb says why it could not start (a port in use) only through its log
// callback, called on the thread that starts it: Start() points this at a
// string for the duration of the server's construction.
thread_local std::string* start_log = nullptr;

int LogMessage(const mg_connection*, const char* message) {
  if (start_log == nullptr) return 0;  // civetweb's own handling: no error log file is set, so nothing
  if (!start_log->empty()) start_log->append("; ");
  start_log->append(message);
  return 1;
}

// Longest a connection may take to send its request (civetweb's default is 30 s).
constexpr const char* kRequestTimeoutMs = "5000";

// Connects to `addr` and closes at once (bounded by 100 ms): a connection
// that wakes civetweb's listening thread and asks nothing.
void Poke(const sockaddr_storage& addr) {
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  timeval tv{0, 100000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const socklen_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  [[maybe_unused]] const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), len);
  close(fd);
}

}  // namespace

// GET /metrics: the collectable's text; any other path under it: 404.
class MetricsServer::Handler final : public CivetHandler {
 public:
  explicit Handler(const prometheus::Collectable* collectable) : collectable_(collectable) {}

  bool handleGet(CivetServer*, mg_connection* conn) override {
    const mg_request_info* request = mg_get_request_info(conn);
    // civetweb hands "/metrics/x" and "/metricsx" to the "/metrics" handler too.
    if (request == nullptr || request->local_uri == nullptr || std::strcmp(request->local_uri, "/metrics") != 0) {
      mg_send_http_error(conn, 404, "not found\n");
      return true;
    }
    const std::string body = TextSerializer().Serialize(collectable_->Collect());
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
              kTextFormatContentType, body.size());
    mg_write(conn, body.data(), body.size());
    return true;
  }

 private:
  const prometheus::Collectable* const collectable_;
};

MetricsServer::MetricsServer(std::unique_ptr<Handler> handler, std::unique_ptr<CivetServer> server,
                             const sockaddr_storage& wake, int port, std::string address)
    : handler_(std::move(handler)),
      server_(std::move(server)),
      wake_(wake),
      port_(port),
      address_(std::move(address)) {}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const prometheus::Collectable* collectable,
                                                                    const std::string& bind_address, int port) {
  if (collectable == nullptr) return absl::InvalidArgumentError("metrics server: nothing to serve");
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics server: port ", port, " not in [0, 65535]"));
  }
  // civetweb's listening_ports syntax: "1.2.3.4:P", "[v6]:P", "+P" (every
  // IPv6 and IPv4 interface, as a Linux socket bound to :: serves both).
  std::string listening;
  in_addr v4;
  in6_addr v6;
  sockaddr_storage wake{};  // where Stop() connects to (the loopback for an every-interface address)
  if (inet_pton(AF_INET, bind_address.c_str(), &v4) == 1) {
    listening = absl::StrCat(bind_address, ":", port);
    auto* a = reinterpret_cast<sockaddr_in*>(&wake);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = v4.s_addr == htonl(INADDR_ANY) ? htonl(INADDR_LOOPBACK) : v4.s_addr;
  } else if (inet_pton(AF_INET6, bind_address.c_str(), &v6) == 1) {
    if (mg_check_feature(MG_FEATURES_IPV6) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "metrics server: cannot serve on the IPv6 address ", bind_address,
          ": this system's civetweb (prometheus-cpp's HTTP server) was built without IPv6; use an IPv4 --host"));
    }
    listening = IN6_IS_ADDR_UNSPECIFIED(&v6) ? absl::StrCat("+", port) : absl::StrCat("[", bind_address, "]:", port);
    auto* a = reinterpret_cast<sockaddr_in6*>(&wake);
    a->sin6_family = AF_INET6;
    a->sin6_addr = IN6_IS_ADDR_UNSPECIFIED(&v6) ? in6addr_loopback : v6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: '", bind_address, "' is not a numeric IPv4 or IPv6 address"));
  }

  CivetCallbacks callbacks;
  callbacks.log_message = LogMessage;
  std::string log;
  start_log = &log;
  std::unique_ptr<CivetServer> server;
  try {
    server = std::make_unique<CivetServer>(
        std::vector<std::string>{"listening_ports", listening, "num_threads", "2", "request_timeout_ms",
                                 kRequestTimeoutMs},
        &callbacks);
  } catch (const std::exception& e) {
    start_log = nullptr;
    return absl::UnavailableError(absl::StrCat("metrics server: cannot listen on ",
                                               net::JoinHostPort(bind_address, port), ": ",
                                               log.empty() ? e.what() : log));
  }
  start_log = nullptr;
  const std::vector<int> ports = server->getListeningPorts();
  if (ports.empty()) return absl::InternalError("metrics server: civetweb reports no listening port");
  auto handler = std::make_unique<Handler>(collectable);
  server->addHandler("/metrics", handler.get());
  const int bound = ports.front();
  if (wake.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&wake)->sin_port = htons(static_cast<uint16_t>(bound));
  } else {
    reinterpret_cast<sockaddr_in6*>(&wake)->sin6_port = htons(static_cast<uint16_t>(bound));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(handler), std::move(server), wake, bound,
                                                          net::JoinHostPort(bind_address, bound)));
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  std::call_once(stop_once_, [this] {
    // close() stops civetweb: its worker threads finish the request in hand
    // (a scrape in progress) and are joined. Its listening thread notices
    // the stop only when its poll returns: after up to 2 s idle, at once on
    // a connection. So until close() returns, an empty connection every
    // 20 ms (each bounded) wakes it.
    std::atomic<bool> done{false};
    std::thread waker([this, &done] {
      while (!done.load()) {
        Poke(wake_);
        for (int i = 0; i < 20 && !done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    server_->close();
    done = true;
    waker.join();
    server_.reset();
  });
}

}  // namespace tandem::metrics
