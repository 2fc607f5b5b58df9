// Prometheus's own parser and linter on our exposition: `promtool check
// metrics` (Debian's prometheus package) must accept it without a word.
// Skips where promtool is not installed.
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
// empty label values, the LLM bucket presets.
std::unique_ptr<Registry> BuildRegistry() {
  auto r = std::make_unique<Registry>();
  Family<Counter>* tokens = *r->AddCounter("tandem_generation_tokens_total", "Output tokens \"generated\".\nPer role.");
  (*tokens->Add({{"role", "decode"}, {"worker", "decode-0"}}))->Increment(1234);
  (*tokens->Add({{"role", "prefill"}, {"worker", "a\\b\"c\nd"}}))->Increment(1);
  (*tokens->Add({{"role", ""}, {"worker", ""}}))->Increment(0);
  Family<Gauge>* g = *r->AddGauge("tandem_num_requests_running", "Requests in the running batch.");
  (*g->Add({}))->Set(3);
  (*g->Add({{"worker", "inf"}}))->Set(std::numeric_limits<double>::infinity());
  (*g->Add({{"worker", "nan"}}))->Set(std::nan(""));
  Family<Histogram>* ttft = *r->AddHistogram("tandem_time_to_first_token_seconds", "TTFT.", kTtftBucketsSeconds);
  Histogram* h = *ttft->Add({{"model", "tandem-shakespeare"}});
  for (double v : {0.0005, 0.004, 0.2, 3.0, 90.0}) h->Observe(v);
  Family<Histogram>* itl = *r->AddHistogram("tandem_inter_token_latency_seconds", "ITL.", kItlBucketsSeconds);
  (*itl->Add({}))->Observe(0.02);
  CallbackFamily* cb = *r->AddCallbackGauge("tandem_kv_cache_usage_ratio", "KV blocks used / total.");
  EXPECT_TRUE(cb->Add({{"worker", "decode-0"}}, [] { return 0.25; }).ok());
  CallbackFamily* cc = *r->AddCallbackCounter("tandem_kv_transfer_bytes_total", "KV bytes put.");
  EXPECT_TRUE(cc->Add({}, [] { return 1e21; }).ok());
  return r;
}

TEST(PromtoolTest, CheckMetricsAcceptsOurExposition) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  std::unique_ptr<Registry> r = BuildRegistry();
  const std::string text = r->Serialize();
  char path[] = "/tmp/tandem_metrics_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  std::string output;
  const int rc = RunCommand(promtool + " check metrics < " + path, &output);
  unlink(path);
  EXPECT_EQ(rc, 0) << output << "\n--- exposition ---\n" << text;
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
