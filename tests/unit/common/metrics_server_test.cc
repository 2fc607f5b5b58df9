// MetricsServer (civetweb underneath) on 127.0.0.1 port 0: serves exactly
// the registry's text as made at each scrape, reports the bound port and
// address, Stop() waits for a scrape in progress and nothing runs after it,
// bad addresses and a busy port are Status errors naming the cause, and an
// IPv6 address either serves or says civetweb lacks IPv6.
// Every client socket has a receive timeout (a bound, not an assertion).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

// A connected client socket to `ip`:`port` (-1 when connect fails), recv bounded by 30 s.
int Connect(int port, const std::string& ip = "127.0.0.1") {
  const bool v6 = ip.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int rc;
  if (v6) {
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET6, ip.c_str(), &addr.sin6_addr);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  if (rc != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The whole answer to an HTTP/1.0 GET of `path` (no gzip asked for), or
// "<connect failed>"; bounded by 16 MiB and the receive timeout.
std::string Get(int port, const std::string& path, const std::string& ip = "127.0.0.1") {
  const int fd = Connect(port, ip);
  if (fd < 0) return "<connect failed>";
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: x\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "<send failed>";
  }
  std::string out;
  char buf[4096];
  while (out.size() < (16u << 20)) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::string StatusLine(const std::string& answer) { return answer.substr(0, answer.find("\r\n")); }
std::string Body(const std::string& answer) {
  const size_t end = answer.find("\r\n\r\n");
  return end == std::string::npos ? "" : answer.substr(end + 4);
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus::Family<prometheus::Counter>* f = *registry_.AddCounter("tandem_requests_total", "Requests.");
    (*AddChild(f, {{"status", "ok"}}))->Increment(42);
    prometheus::Family<prometheus::Histogram>* h = *registry_.AddHistogram("tandem_ttft_seconds", "TTFT.");
    (*AddChild(h, {}, {0.5}))->Observe(0.25);
  }
  std::unique_ptr<MetricsServer> StartServer(const std::string& address = "127.0.0.1", int port = 0) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(&registry_, address, port);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  Registry registry_;
};

TEST_F(MetricsServerTest, GetMetricsServesTheRegistryTextMadeAtEachScrape) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);
  EXPECT_EQ(server->address(), absl::StrCat("127.0.0.1:", server->port()));
  std::string answer = Get(server->port(), "/metrics");
  EXPECT_EQ(StatusLine(answer), "HTTP/1.1 200 OK") << answer;
  EXPECT_NE(answer.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos)
      << answer;
  EXPECT_NE(answer.find(absl::StrCat("\r\nContent-Length: ", registry_.Serialize().size(), "\r\n")),
            std::string::npos)
      << answer;
  EXPECT_EQ(Body(answer), registry_.Serialize());
  EXPECT_NE(answer.find("\ntandem_requests_total{status=\"ok\"} 42\n"), std::string::npos) << answer;
  // The text is made at each scrape.
  (*AddChild(*registry_.AddGauge("late_gauge", "Added after start."), {}))->Set(1.0 / 21845);
  answer = Get(server->port(), "/metrics");
  EXPECT_NE(answer.find("\nlate_gauge 4.5777065690089265e-05\n"), std::string::npos) << answer;
  EXPECT_EQ(Body(answer), registry_.Serialize());
  // Nothing is served outside /metrics.
  for (const char* path : {"/", "/favicon.ico", "/metricsx", "/metrics/x"}) {
    EXPECT_TRUE(absl::StrContains(StatusLine(Get(server->port(), path)), " 404 ")) << path << ": "
                                                                                    << Get(server->port(), path);
  }
  EXPECT_EQ(StatusLine(Get(server->port(), "/metrics?x=1")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsServerTest, EachStartGetsItsOwnFreePort) {
  std::unique_ptr<MetricsServer> a = StartServer();
  std::unique_ptr<MetricsServer> b = StartServer();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->port(), b->port());
  EXPECT_EQ(StatusLine(Get(b->port(), "/metrics")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsServerTest, EveryInterfaceAddress) {
  std::unique_ptr<MetricsServer> server = StartServer("0.0.0.0");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->address(), absl::StrCat("0.0.0.0:", server->port()));
  EXPECT_EQ(StatusLine(Get(server->port(), "/metrics")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsServerTest, StopWaitsForAScrapeInProgressAndNothingRunsAfterIt) {
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  CallbackFamily* slow = *registry_.AddCallbackGauge("slow_gauge", "Blocks the scrape until released.");
  ASSERT_TRUE(slow->Add({}, [&] {
                    ++calls;
                    // Bounded: released by the test, or gives up after 30 s.
                    for (int i = 0; i < 30000 && !release.load(); ++i) {
                      std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    }
                    return 1.0;
                  }).ok());
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::string answer;
  std::thread scrape([&] { answer = Get(port, "/metrics"); });
  for (int i = 0; i < 30000 && calls.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(calls.load(), 1);
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server->Stop();
    stopped = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(stopped.load()) << "Stop() returned while a scrape was still reading the registry";
  release = true;
  stopper.join();
  scrape.join();
  // civetweb sends nothing more once stopping: the scrape ends unanswered
  // (or answered, had it finished first).
  EXPECT_TRUE(answer.empty() || answer.find("\nslow_gauge 1\n") != std::string::npos) << answer;
  EXPECT_EQ(Connect(port), -1);  // nothing listens any more
  EXPECT_EQ(calls.load(), 1);
  server->Stop();  // idempotent
  server.reset();  // and the destructor after Stop is fine
}

TEST_F(MetricsServerTest, DestructorStopsARunningServer) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server.reset();
  EXPECT_EQ(Connect(port), -1);
}

TEST_F(MetricsServerTest, BadArgumentsAndBusyPort) {
  for (const char* bad : {"localhost", "", "1.2.3", "127.0.0.1:80", "[::1]"}) {  // names are not resolved
    EXPECT_EQ(MetricsServer::Start(&registry_, bad, 0).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(MetricsServer::Start(&registry_, "127.0.0.1", 70000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start(&registry_, "127.0.0.1", -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start(nullptr, "127.0.0.1", 0).status().code(), absl::StatusCode::kInvalidArgument);
  std::unique_ptr<MetricsServer> first = StartServer();
  ASSERT_NE(first, nullptr);
  const absl::Status busy = MetricsServer::Start(&registry_, "127.0.0.1", first->port()).status();
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable) << busy;
  // The cause, as civetweb logged it while starting.
  EXPECT_TRUE(absl::StrContains(busy.message(), absl::StrCat("127.0.0.1:", first->port()))) << busy;
  EXPECT_TRUE(absl::StrContains(busy.message(), "in use")) << busy;
  // The failed start left the first server alone.
  EXPECT_EQ(StatusLine(Get(first->port(), "/metrics")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsServerTest, Ipv6LiteralServesBracketedOrSaysCivetwebLacksIpv6) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(&registry_, "::1", 0);
  if (!server.ok()) {
    // Debian 12's civetweb is built without IPv6.
    EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition) << server.status();
    EXPECT_TRUE(absl::StrContains(server.status().message(), "without IPv6")) << server.status();
    return;
  }
  EXPECT_EQ((*server)->address(), absl::StrCat("[::1]:", (*server)->port()));
  EXPECT_EQ(StatusLine(Get((*server)->port(), "/metrics", "::1")), "HTTP/1.1 200 OK");
}

}  // namespace
}  // namespace tandem::metrics
