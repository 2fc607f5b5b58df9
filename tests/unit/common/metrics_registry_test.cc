// Registry over prometheus-cpp: the exact exposition of a small registry
// (golden text, deterministic order), one name space for prometheus-cpp
// families and scrape-time ones, Status errors instead of exceptions, child
// identity, and collection racing with registration.
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics/buckets.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

TEST(RegistryTest, ExpositionOfASmallRegistryIsExact) {
  Registry r;
  prometheus::Family<prometheus::Counter>* requests = *r.AddCounter("tandem_requests_total", "Requests, by status.");
  (*AddChild(requests, {{"status", "ok"}}))->Increment(3);
  (*AddChild(requests, {{"status", "error"}}))->Increment();
  prometheus::Family<prometheus::Gauge>* running = *r.AddGauge("tandem_running_requests", "Requests running now.");
  (*AddChild(running, {}))->Set(2);
  // Bounds and observations exact in binary, so _sum is exact too.
  prometheus::Family<prometheus::Histogram>* ttft = *r.AddHistogram("tandem_ttft_seconds", "Time to first token.");
  prometheus::Histogram* h = *AddChild(ttft, {{"role", "prefill"}}, {0.015625, 0.125, 1});
  for (double v : {0.0078125, 0.015625, 0.5, 2.0}) h->Observe(v);
  CallbackFamily* used = *r.AddCallbackGauge("tandem_kv_blocks_used", "KV blocks in use.");
  ASSERT_TRUE(used->Add({{"worker", "d0"}}, [] { return 7.0; }).ok());
  // Families without children write nothing.
  ASSERT_TRUE(r.AddGauge("tandem_unused", "Never given a child.").ok());
  ASSERT_TRUE(r.AddCallbackCounter("tandem_unused_total", "Never given a callback.").ok());

  // Families by name, children by labels.
  EXPECT_EQ(r.Serialize(),
            "# HELP tandem_kv_blocks_used KV blocks in use.\n"
            "# TYPE tandem_kv_blocks_used gauge\n"
            "tandem_kv_blocks_used{worker=\"d0\"} 7\n"
            "# HELP tandem_requests_total Requests, by status.\n"
            "# TYPE tandem_requests_total counter\n"
            "tandem_requests_total{status=\"error\"} 1\n"
            "tandem_requests_total{status=\"ok\"} 3\n"
            "# HELP tandem_running_requests Requests running now.\n"
            "# TYPE tandem_running_requests gauge\n"
            "tandem_running_requests 2\n"
            "# HELP tandem_ttft_seconds Time to first token.\n"
            "# TYPE tandem_ttft_seconds histogram\n"
            "tandem_ttft_seconds_bucket{role=\"prefill\",le=\"0.015625\"} 2\n"
            "tandem_ttft_seconds_bucket{role=\"prefill\",le=\"0.125\"} 2\n"
            "tandem_ttft_seconds_bucket{role=\"prefill\",le=\"1\"} 3\n"
            "tandem_ttft_seconds_bucket{role=\"prefill\",le=\"+Inf\"} 4\n"
            "tandem_ttft_seconds_sum{role=\"prefill\"} 2.5234375\n"
            "tandem_ttft_seconds_count{role=\"prefill\"} 4\n");
}

TEST(RegistryTest, EmptyRegistrySerializesToNothing) {
  Registry r;
  EXPECT_EQ(r.Serialize(), "");
  EXPECT_TRUE(r.Collect().empty());
}

TEST(RegistryTest, ChildrenComeOutInLabelOrderWhateverTheInsertionOrder) {
  Registry r;
  prometheus::Family<prometheus::Counter>* f = *r.AddCounter("x_total", "x");
  for (int i : {7, 3, 9, 0, 5, 1, 8, 2, 6, 4}) (*AddChild(f, {{"w", absl::StrCat("w", i)}}))->Increment(i);
  std::string want = "# HELP x_total x\n# TYPE x_total counter\n";
  for (int i = 0; i < 10; ++i) absl::StrAppend(&want, "x_total{w=\"w", i, "\"} ", i, "\n");
  EXPECT_EQ(r.Serialize(), want);
}

TEST(RegistryTest, EscapesLabelValuesAndHelp) {
  Registry r;
  prometheus::Family<prometheus::Counter>* f = *r.AddCounter("x_total", "Line one\nline \\two\\ \"quoted\".");
  (*AddChild(f, {{"path", "C:\\dir\\\"f\"\nnext"}}))->Increment(1);
  EXPECT_EQ(r.Serialize(),
            "# HELP x_total Line one\\nline \\\\two\\\\ \"quoted\".\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"C:\\\\dir\\\\\\\"f\\\"\\nnext\"} 1\n");
}

TEST(RegistryTest, SameLabelsAreTheSameChild) {
  Registry r;
  prometheus::Family<prometheus::Counter>* f = *r.AddCounter("x_total", "x");
  prometheus::Counter* a = *AddChild(f, {{"role", "decode"}, {"worker", "d0"}});
  prometheus::Counter* b = *AddChild(f, {{"worker", "d0"}, {"role", "decode"}});
  prometheus::Counter* c = *AddChild(f, {{"worker", "d1"}, {"role", "decode"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  a->Increment(2);
  b->Increment(3);
  EXPECT_EQ(a->Value(), 5);
  EXPECT_EQ(c->Value(), 0);
}

TEST(RegistryTest, BadChildrenAreRefusedAsStatus) {
  Registry r;
  prometheus::Family<prometheus::Counter>* f = *r.AddCounter("x_total", "x");
  EXPECT_EQ(AddChild(f, {{"__a", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AddChild(f, {{"1a", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  prometheus::Family<prometheus::Gauge>* g = *r.AddGauge("g", "g");
  EXPECT_EQ(AddChild(g, {{"a-b", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  prometheus::Family<prometheus::Histogram>* h = *r.AddHistogram("h_seconds", "h");
  const auto buckets = Buckets(kItlBucketsSeconds);
  EXPECT_EQ(AddChild(h, {{"le", "1"}}, buckets).status().code(), absl::StatusCode::kInvalidArgument);
  const double inf = std::numeric_limits<double>::infinity();
  for (const std::vector<double>& bad : {std::vector<double>{1, 1}, std::vector<double>{2, 1},
                                         std::vector<double>{1, inf}, std::vector<double>{std::nan("")}}) {
    EXPECT_EQ(AddChild(h, {}, bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(r.Serialize(), "");  // nothing was created
  EXPECT_TRUE(AddChild(h, {}, {-1, 0, 1}).ok());
}

TEST(RegistryTest, NameErrors) {
  Registry r;
  ASSERT_TRUE(r.AddCounter("a_total", "a").ok());
  EXPECT_EQ(r.AddGauge("a_total", "again").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCounter("a_total", "a").status().code(), absl::StatusCode::kAlreadyExists);  // never merged
  EXPECT_EQ(r.AddCallbackGauge("a_total", "again").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCounter("bad-name", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCallbackGauge("9lives", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("b_total", "").status().code(), absl::StatusCode::kInvalidArgument);
  // A histogram's sample names collide with other families either way round,
  // scrape-time ones included.
  ASSERT_TRUE(r.AddHistogram("lat_seconds", "l").ok());
  EXPECT_EQ(r.AddCounter("lat_seconds_count", "c").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCallbackGauge("lat_seconds_bucket", "c").status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(r.AddCollectorGauge("q_sum", "q", [] { return std::vector<Sample>{}; }).ok());
  EXPECT_EQ(r.AddHistogram("q", "q").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCollectorGauge("e", "E.", nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  // A failed Add claims nothing.
  EXPECT_TRUE(r.AddCounter("b_total", "now with help").ok());
  EXPECT_TRUE(r.AddCollectorCounter("e_total", "E.", [] { return std::vector<Sample>{}; }).ok());
}

TEST(RegistryTest, CollectRacesWithRegistrationAndUpdates) {
  Registry r;
  prometheus::Family<prometheus::Counter>* c = *r.AddCounter("c_total", "c");
  (*AddChild(c, {{"i", "0"}}))->Increment();
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done.load()) {
      const std::string text = r.Serialize();
      const size_t type = text.find("# TYPE c_total counter\n");
      EXPECT_NE(type, std::string::npos) << text;
      EXPECT_EQ(text.find("# TYPE c_total", type + 1), std::string::npos) << text;
      if (type == std::string::npos) break;
    }
  });
  for (int i = 0; i < 200; ++i) {
    (*AddChild(c, {{"i", absl::StrCat(i % 10)}}))->Increment();
    CallbackFamily* f = *r.AddCallbackGauge(absl::StrCat("g", i), "g");
    ASSERT_TRUE(f->Add({{"i", "x"}}, [i] { return static_cast<double>(i); }).ok());
  }
  done = true;
  scraper.join();
  const std::vector<prometheus::MetricFamily> families = r.Collect();
  EXPECT_EQ(families.size(), 201u);
  for (size_t i = 1; i < families.size(); ++i) EXPECT_LT(families[i - 1].name, families[i].name);
}

TEST(BucketsTest, PresetsAreValidAndSpanTheirRanges) {
  EXPECT_TRUE(ValidateBucketBounds(kTtftBucketsSeconds).ok());
  EXPECT_TRUE(ValidateBucketBounds(kItlBucketsSeconds).ok());
  EXPECT_TRUE(ValidateBucketBounds(kE2eLatencyBucketsSeconds).ok());
  EXPECT_TRUE(ValidateBucketBounds(kQueueTimeBucketsSeconds).ok());
  EXPECT_TRUE(ValidateBucketBounds(kKvTransferBucketsSeconds).ok());
  EXPECT_TRUE(ValidateBucketBounds(kTokenCountBuckets).ok());
  EXPECT_EQ(kTtftBucketsSeconds.front(), 0.001);
  EXPECT_EQ(kTtftBucketsSeconds.back(), 60.0);
  EXPECT_EQ(kItlBucketsSeconds.front(), 0.001);
  EXPECT_EQ(kItlBucketsSeconds.back(), 5.0);
  EXPECT_EQ(Buckets(kTokenCountBuckets), prometheus::Histogram::BucketBoundaries(kTokenCountBuckets.begin(),
                                                                                 kTokenCountBuckets.end()));
}

TEST(BucketsTest, ValidateNamesTheBadBound) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(ValidateBucketBounds(std::vector<double>{}).ok());
  EXPECT_TRUE(ValidateBucketBounds(std::vector<double>{-1, 0, 1}).ok());
  EXPECT_EQ(ValidateBucketBounds(std::vector<double>{1, 2, 2}).message(),
            "bucket bound 2 (2) is not greater than the one before (2)");
  EXPECT_EQ(ValidateBucketBounds(std::vector<double>{1, inf}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBucketBounds(std::vector<double>{std::nan("")}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BucketsTest, ExponentialAndLinear) {
  EXPECT_EQ(*ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(*ExponentialBuckets(0.001, 10, 3).value().data(), 0.001);
  EXPECT_EQ(*LinearBuckets(0, 0.5, 3), (std::vector<double>{0, 0.5, 1}));
  EXPECT_EQ(ExponentialBuckets(0, 2, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExponentialBuckets(1, 1, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExponentialBuckets(1, 2, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExponentialBuckets(1e300, 1e10, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearBuckets(0, 0, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearBuckets(0, 1, 1001).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearBuckets(1e20, 1, 3).status().code(), absl::StatusCode::kInvalidArgument);
  // What the helpers make, prometheus-cpp takes.
  Registry r;
  prometheus::Family<prometheus::Histogram>* h = *r.AddHistogram("h_seconds", "h");
  EXPECT_TRUE(AddChild(h, {}, *ExponentialBuckets(0.001, 2.5, 12)).ok());
}

}  // namespace
}  // namespace tandem::metrics
