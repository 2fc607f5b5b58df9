// Prometheus's own parser and linter on our exposition: `promtool check
// metrics` (Debian's prometheus package) must accept it without a word.
// Skips where promtool is not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/metrics/buckets.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

// promtool on $PATH, or "" when absent.
std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':', absl::SkipEmpty())) {
    std::string candidate = std::string(dir) + "/promtool";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Runs `command`, returning its exit status and combined output (bounded).
int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0 && output->size() < (1 << 20)) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Every metric kind with the awkward cases: escapes, +Inf/NaN values,
// empty label values, the LLM bucket presets, scrape-time families.
std::unique_ptr<Registry> BuildRegistry() {
  auto r = std::make_unique<Registry>();
  prometheus::Family<prometheus::Counter>* tokens =
      *r->AddCounter("tandem_generation_tokens_total", "Output tokens \"generated\".\nPer role.");
  (*AddChild(tokens, {{"role", "decode"}, {"worker", "decode-0"}}))->Increment(1234);
  (*AddChild(tokens, {{"role", "prefill"}, {"worker", "a\\b\"c\nd"}}))->Increment(1);
  (*AddChild(tokens, {{"role", ""}, {"worker", ""}}))->Increment(0);
  prometheus::Family<prometheus::Gauge>* g =
      *r->AddGauge("tandem_num_requests_running", "Requests in the running batch.");
  (*AddChild(g, {}))->Set(3);
  (*AddChild(g, {{"worker", "inf"}}))->Set(std::numeric_limits<double>::infinity());
  (*AddChild(g, {{"worker", "nan"}}))->Set(std::nan(""));
  prometheus::Family<prometheus::Histogram>* ttft = *r->AddHistogram("tandem_time_to_first_token_seconds", "TTFT.");
  prometheus::Histogram* h = *AddChild(ttft, {{"model", "tandem-shakespeare"}}, Buckets(kTtftBucketsSeconds));
  for (double v : {0.0005, 0.004, 0.2, 3.0, 90.0}) h->Observe(v);
  prometheus::Family<prometheus::Histogram>* itl = *r->AddHistogram("tandem_inter_token_latency_seconds", "ITL.");
  (*AddChild(itl, {}, Buckets(kItlBucketsSeconds)))->Observe(0.02);
  prometheus::Family<prometheus::Histogram>* sizes = *r->AddHistogram("tandem_batch_size", "Sequences per step.");
  (*AddChild(sizes, {}, *ExponentialBuckets(1, 2, 11)))->Observe(3);
  CallbackFamily* cb = *r->AddCallbackGauge("tandem_kv_cache_usage_ratio", "KV blocks used / total.");
  EXPECT_TRUE(cb->Add({{"worker", "decode-0"}}, [] { return 1.0 / 21845; }).ok());
  CallbackFamily* cc = *r->AddCallbackCounter("tandem_kv_transfer_bytes_total", "KV bytes put.");
  EXPECT_TRUE(cc->Add({}, [] { return 1e21; }).ok());
  EXPECT_TRUE(r->AddCollectorGauge("tandem_worker_up", "1 when routed to.", [] {
                 return std::vector<Sample>{{{{"worker", "p0"}, {"role", "prefill"}}, 1}, {{{"worker", "d0"}}, 0}};
               }).ok());
  return r;
}

// promtool check metrics on `text`: its exit status, and its output in `output`.
int Promtool(const std::string& promtool, const std::string& text, std::string* output) {
  char path[] = "/tmp/tandem_metrics_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return -1;
  close(fd);
  std::ofstream(path) << text;
  const int rc = RunCommand(promtool + " check metrics < " + path, output);
  unlink(path);
  return rc;
}

// The body of GET /metrics from 127.0.0.1:`port` (HTTP/1.0, no gzip), "" on failure.
std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while (out.size() < (16u << 20) && (n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

TEST(PromtoolTest, CheckMetricsAcceptsOurExposition) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  std::unique_ptr<Registry> r = BuildRegistry();
  const std::string text = r->Serialize();
  std::string output;
  EXPECT_EQ(Promtool(promtool, text, &output), 0) << output << "\n--- exposition ---\n" << text;
  EXPECT_EQ(output, "") << "--- exposition ---\n" << text;
}

TEST(PromtoolTest, CheckMetricsAcceptsWhatTheServerServes) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  std::unique_ptr<Registry> r = BuildRegistry();
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(r.get(), "127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string text = Scrape((*server)->port());
  ASSERT_NE(text.find("tandem_worker_up{role=\"prefill\",worker=\"p0\"} 1"), std::string::npos) << text;
  std::string output;
  EXPECT_EQ(Promtool(promtool, text, &output), 0) << output << "\n--- exposition ---\n" << text;
  EXPECT_EQ(output, "") << "--- exposition ---\n" << text;
}

TEST(PromtoolTest, CheckMetricsRejectsABrokenExposition) {
  // The check above is only worth something if promtool does reject bad text.
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  std::string output;
  const int rc = RunCommand("printf '# TYPE x counter\\nx{a=\"unterminated} 1\\n' | " + promtool + " check metrics",
                            &output);
  EXPECT_NE(rc, 0) << output;
}

}  // namespace
}  // namespace tandem::metrics
