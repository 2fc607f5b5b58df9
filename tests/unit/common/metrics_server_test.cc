// MetricsServer on 127.0.0.1 port 0: exact answers for /metrics, other
// paths, other methods, malformed, oversized and unfinished requests; a
// stalled client cannot hang it; Stop() ends it, even mid-connection.
// Every client socket has a receive timeout (a bound, not an assertion).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics/http_request.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

// A connected client socket (-1 when connect fails), recv bounded by 30 s.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << "send failed";
    sent += static_cast<size_t>(n);
  }
}

// Everything the server sends until it closes (bounded: 16 MiB, recv timeout).
std::string ReadToEnd(int fd) {
  std::string out;
  char buf[4096];
  while (out.size() < (16u << 20)) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Sends `request` (then half-closes when `finish`), returns the whole answer.
std::string Exchange(int port, const std::string& request, bool finish = true) {
  const int fd = Connect(port);
  if (fd < 0) return "<connect failed>";
  SendAll(fd, request);
  if (finish) shutdown(fd, SHUT_WR);
  std::string answer = ReadToEnd(fd);
  close(fd);
  return answer;
}

std::string StatusLine(const std::string& answer) { return answer.substr(0, answer.find("\r\n")); }

TEST(HttpRequestTest, FindHeadEnd) {
  EXPECT_EQ(FindHeadEnd("GET / HTTP/1.1\r\nHost: x\r\n"), absl::string_view::npos);
  EXPECT_EQ(FindHeadEnd("GET / HTTP/1.1\r\n\r\nbody"), 18u);
  EXPECT_EQ(FindHeadEnd("GET / HTTP/1.1\n\nbody"), 16u);
  EXPECT_EQ(FindHeadEnd(""), absl::string_view::npos);
}

TEST(HttpRequestTest, ParseRequestLine) {
  absl::StatusOr<HttpRequestLine> r = ParseRequestLine("GET /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method, "GET");
  EXPECT_EQ(r->path, "/metrics");
  EXPECT_EQ(r->version, "HTTP/1.1");
  for (const char* bad : {"GET /metrics", "GET /metrics HTTP/1.1 extra", "GET http://h/metrics HTTP/1.1",
                          "GET /metrics HTTP/2", " /metrics HTTP/1.1", "GE\"T /metrics HTTP/1.1"}) {
    EXPECT_EQ(ParseRequestLine(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(HttpRequestTest, FormatResponse) {
  EXPECT_EQ(FormatResponse(404, "Not Found", "text/plain", "nope", "X-A: 1\r\n"),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n"
            "X-A: 1\r\n\r\nnope");
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Family<Counter>* f = *registry_.AddCounter("tandem_requests_total", "Requests.");
    (*f->Add({{"status", "ok"}}))->Increment(42);
    Family<Histogram>* h = *registry_.AddHistogram("tandem_ttft_seconds", "TTFT.", std::vector<double>{0.5});
    (*h->Add({}))->Observe(0.25);
  }
  std::unique_ptr<MetricsServer> StartServer(MetricsServerOptions options = {}) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(&registry_, options);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  std::string Expected200() const {
    const std::string body = registry_.Serialize();
    return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                        "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
  }
  Registry registry_;
};

TEST_F(MetricsServerTest, GetMetricsAnswersExactlyTheRegistryText) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);
  EXPECT_EQ(server->address(), absl::StrCat("127.0.0.1:", server->port()));
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
  EXPECT_EQ(Exchange(server->port(), request), Expected200());
  // The text is made at each scrape.
  (*(*registry_.AddGauge("late_gauge", "Added after start."))->Add({}))->Set(1);
  EXPECT_EQ(Exchange(server->port(), request), Expected200());
  EXPECT_NE(Expected200().find("late_gauge 1\n"), std::string::npos);
  // A query string, HTTP/1.0 and a bare-LF client are fine too.
  EXPECT_EQ(Exchange(server->port(), "GET /metrics?name[]=x HTTP/1.1\r\n\r\n"), Expected200());
  EXPECT_EQ(Exchange(server->port(), "GET /metrics HTTP/1.0\n\n"), Expected200());
  // Without half-closing: the server answers once the head is complete.
  EXPECT_EQ(Exchange(server->port(), request, /*finish=*/false), Expected200());
}

TEST_F(MetricsServerTest, OtherPathsAndMethods) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string not_found =
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n"
      "Connection: close\r\n\r\nnot found\n";
  EXPECT_EQ(Exchange(server->port(), "GET / HTTP/1.1\r\n\r\n"), not_found);
  EXPECT_EQ(Exchange(server->port(), "GET /metricsx HTTP/1.1\r\n\r\n"), not_found);
  EXPECT_EQ(Exchange(server->port(), "GET /metrics/ HTTP/1.1\r\n\r\n"), not_found);
  EXPECT_EQ(Exchange(server->port(), "GET /favicon.ico HTTP/1.1\r\n\r\n"), not_found);
  const std::string post = Exchange(server->port(), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(StatusLine(post), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_NE(post.find("\r\nAllow: GET\r\n"), std::string::npos) << post;
  EXPECT_EQ(StatusLine(Exchange(server->port(), "HEAD /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 405 Method Not Allowed");
}

TEST_F(MetricsServerTest, MalformedRequestsGet400) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  for (const std::string& request : std::vector<std::string>{"HELLO\r\n\r\n", "GET /metrics\r\n\r\n", "GET /metrics HTTP/2.0\r\n\r\n",
                                    "GET  /metrics HTTP/1.1\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n",
                                    "G(T /metrics HTTP/1.1\r\n\r\n", "\r\n\r\n",
                                    std::string("GET /metrics HTTP/1.1\0\r\n\r\n", 27)}) {
    EXPECT_EQ(StatusLine(Exchange(server->port(), request)), "HTTP/1.1 400 Bad Request") << request;
  }
  // Still serving afterwards.
  EXPECT_EQ(Exchange(server->port(), "GET /metrics HTTP/1.1\r\n\r\n"), Expected200());
}

TEST_F(MetricsServerTest, OversizedRequestHeadGets431) {
  MetricsServerOptions options;
  options.max_request_bytes = 1024;
  std::unique_ptr<MetricsServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  // A head that never ends, far over the limit.
  EXPECT_EQ(StatusLine(Exchange(server->port(), std::string(50000, 'a'))),
            "HTTP/1.1 431 Request Header Fields Too Large");
  // A complete head, but one byte too long; and one exactly at the limit.
  const std::string prefix = "GET /metrics HTTP/1.1\r\nX-Pad: ";
  const std::string at_limit = prefix + std::string(1024 - prefix.size() - 4, 'p') + "\r\n\r\n";
  ASSERT_EQ(at_limit.size(), 1024u);
  EXPECT_EQ(Exchange(server->port(), at_limit), Expected200());
  const std::string over = prefix + std::string(1024 - prefix.size() - 3, 'p') + "\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(server->port(), over)), "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(Exchange(server->port(), "GET /metrics HTTP/1.1\r\n\r\n"), Expected200());
}

TEST_F(MetricsServerTest, UnfinishedRequestTimesOutWith408AndServingGoesOn) {
  MetricsServerOptions options;
  options.read_timeout = std::chrono::milliseconds(200);
  std::unique_ptr<MetricsServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  // The head never completes and the client never closes: the server gives up.
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n", /*finish=*/false)),
            "HTTP/1.1 408 Request Timeout");
  // A client that connects and sends nothing at all.
  EXPECT_EQ(StatusLine(Exchange(server->port(), "", /*finish=*/false)), "HTTP/1.1 408 Request Timeout");
  // A client that closes before finishing gets nothing, and the next is served.
  EXPECT_EQ(Exchange(server->port(), "GET /met"), "");
  EXPECT_EQ(Exchange(server->port(), "GET /metrics HTTP/1.1\r\n\r\n"), Expected200());
}

TEST_F(MetricsServerTest, StopEndsAConnectionInProgressAndTheListener) {
  MetricsServerOptions options;
  options.read_timeout = std::chrono::hours(1);  // only Stop() can end the stalled client below
  std::unique_ptr<MetricsServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  ASSERT_EQ(Exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), Expected200());
  const int stalled = Connect(port);
  ASSERT_GE(stalled, 0);
  SendAll(stalled, "GET /metr");
  server->Stop();
  EXPECT_EQ(ReadToEnd(stalled), "");  // closed without an answer
  close(stalled);
  EXPECT_EQ(Connect(port), -1);  // nothing listens any more
  server->Stop();                // idempotent
  server.reset();                // and the destructor after Stop is fine
}

TEST_F(MetricsServerTest, DestructorStopsARunningServer) {
  std::unique_ptr<MetricsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server.reset();
  EXPECT_EQ(Connect(port), -1);
}

TEST_F(MetricsServerTest, BadOptionsAndBusyPort) {
  MetricsServerOptions bad;
  bad.bind_address = "localhost";  // names are not resolved
  EXPECT_EQ(MetricsServer::Start(&registry_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.port = 70000;
  EXPECT_EQ(MetricsServer::Start(&registry_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.read_timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(MetricsServer::Start(&registry_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start(nullptr, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::unique_ptr<MetricsServer> first = StartServer();
  ASSERT_NE(first, nullptr);
  MetricsServerOptions same;
  same.port = first->port();
  EXPECT_EQ(MetricsServer::Start(&registry_, same).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tandem::metrics
