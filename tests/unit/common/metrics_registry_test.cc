// Registry: the exact exposition of a small registry (golden text), family
// and child identity, name collisions, callback metrics, bucket presets.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/metrics/buckets.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

TEST(RegistryTest, ExpositionOfASmallRegistryIsExact) {
  Registry r;
  Family<Counter>* requests = *r.AddCounter("tandem_requests_total", "Requests finished, by status.");
  (*requests->Add({{"status", "ok"}}))->Increment(3);
  (*requests->Add({{"status", "error"}}))->Increment();
  Family<Gauge>* running = *r.AddGauge("tandem_running_requests", "Requests running now.");
  (*running->Add({}))->Set(2);
  // Bounds and observations exact in binary, so _sum is exact too.
  Family<Histogram>* ttft = *r.AddHistogram("tandem_ttft_seconds", "Time to first token.",
                                            std::vector<double>{0.015625, 0.125, 1});
  Histogram* h = *ttft->Add({{"role", "prefill"}});
  for (double v : {0.0078125, 0.015625, 0.5, 2.0}) h->Observe(v);
  CallbackFamily* used = *r.AddCallbackGauge("tandem_kv_blocks_used", "KV blocks in use.");
  ASSERT_TRUE(used->Add({{"worker", "d0"}}, [] { return 7.0; }).ok());
  // A family without children writes nothing.
  ASSERT_TRUE(r.AddGauge("tandem_unused", "Never given a child.").ok());

  EXPECT_EQ(r.Serialize(),
            "# HELP tandem_kv_blocks_used KV blocks in use.\n"
            "# TYPE tandem_kv_blocks_used gauge\n"
            "tandem_kv_blocks_used{worker=\"d0\"} 7\n"
            "# HELP tandem_requests_total Requests finished, by status.\n"
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
}

TEST(RegistryTest, EscapesLabelValuesAndHelp) {
  Registry r;
  Family<Counter>* f = *r.AddCounter("x_total", "Line one\nline \\two\\ \"quoted\".");
  (*f->Add({{"path", "C:\\dir\\\"f\"\nnext"}}))->Increment(1);
  EXPECT_EQ(r.Serialize(),
            "# HELP x_total Line one\\nline \\\\two\\\\ \"quoted\".\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"C:\\\\dir\\\\\\\"f\\\"\\nnext\"} 1\n");
}

TEST(RegistryTest, SameLabelsInAnyOrderAreTheSameChild) {
  Registry r;
  Family<Counter>* f = *r.AddCounter("x_total", "x");
  Counter* a = *f->Add({{"role", "decode"}, {"worker", "d0"}});
  Counter* b = *f->Add({{"worker", "d0"}, {"role", "decode"}});
  Counter* c = *f->Add({{"worker", "d1"}, {"role", "decode"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  a->Increment(2);
  b->Increment(3);
  EXPECT_EQ(c->Value(), 0);
  EXPECT_EQ(r.Serialize(),
            "# HELP x_total x\n# TYPE x_total counter\n"
            "x_total{role=\"decode\",worker=\"d0\"} 5\n"
            "x_total{role=\"decode\",worker=\"d1\"} 0\n");
}

TEST(RegistryTest, BadLabelSetsAreRefused) {
  Registry r;
  Family<Counter>* f = *r.AddCounter("x_total", "x");
  EXPECT_EQ(f->Add({{"a", "1"}, {"a", "2"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->Add({{"__a", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  Family<Histogram>* h = *r.AddHistogram("h_seconds", "h", kItlBucketsSeconds);
  EXPECT_EQ(h->Add({{"le", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Serialize(), "");  // nothing was created
}

TEST(RegistryTest, NameErrors) {
  Registry r;
  ASSERT_TRUE(r.AddCounter("a_total", "a").ok());
  EXPECT_EQ(r.AddGauge("a_total", "again").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCounter("bad-name", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("b_total", "").status().code(), absl::StatusCode::kInvalidArgument);
  // A histogram's sample names collide with other families either way round.
  ASSERT_TRUE(r.AddHistogram("lat_seconds", "l", kTtftBucketsSeconds).ok());
  EXPECT_EQ(r.AddCounter("lat_seconds_count", "c").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddGauge("lat_seconds_bucket", "c").status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(r.AddGauge("q_sum", "q").ok());
  EXPECT_EQ(r.AddHistogram("q", "q", kTtftBucketsSeconds).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCallbackCounter("q_sum", "q").status().code(), absl::StatusCode::kAlreadyExists);
  // A failed Add claims nothing.
  EXPECT_TRUE(r.AddCounter("b_total", "now with help").ok());
}

TEST(RegistryTest, BadBucketBoundsAreRefused) {
  Registry r;
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(r.AddHistogram("h1", "h", std::vector<double>{1, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h2", "h", std::vector<double>{2, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h3", "h", std::vector<double>{1, inf}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h4", "h", std::vector<double>{std::nan("")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.AddHistogram("h1", "h", std::vector<double>{-1, 0, 1}).ok());  // the name was not taken
}

TEST(CounterTest, NegativeAndNanIncrementsAreIgnored) {
  Counter c;
  c.Increment();
  c.Increment(2.5);
  c.Increment(-1);
  c.Increment(std::nan(""));
  EXPECT_EQ(c.Value(), 3.5);
}

TEST(GaugeTest, SetIncrementDecrement) {
  Gauge g;
  g.Set(10);
  g.Increment();
  g.Increment(4);
  g.Decrement(20);
  EXPECT_EQ(g.Value(), -5);
  g.Set(std::numeric_limits<double>::infinity());
  EXPECT_EQ(FormatValue(g.Value()), "+Inf");
}

TEST(CallbackFamilyTest, CalledAtEveryScrapeWithTheCurrentValue) {
  Registry r;
  int calls = 0;
  double blocks = 3;
  CallbackFamily* f = *r.AddCallbackGauge("kv_blocks_used", "Blocks.");
  ASSERT_TRUE(f->Add({{"worker", "d0"}}, [&] {
                 ++calls;
                 return blocks;
               }).ok());
  CallbackFamily* c = *r.AddCallbackCounter("kv_bytes_total", "Bytes.");
  ASSERT_TRUE(c->Add({}, [] { return 4096.0; }).ok());
  EXPECT_EQ(calls, 0);  // nothing runs until a scrape
  const std::string first = r.Serialize();
  blocks = 5;
  const std::string second = r.Serialize();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(first,
            "# HELP kv_blocks_used Blocks.\n# TYPE kv_blocks_used gauge\nkv_blocks_used{worker=\"d0\"} 3\n"
            "# HELP kv_bytes_total Bytes.\n# TYPE kv_bytes_total counter\nkv_bytes_total 4096\n");
  EXPECT_EQ(second,
            "# HELP kv_blocks_used Blocks.\n# TYPE kv_blocks_used gauge\nkv_blocks_used{worker=\"d0\"} 5\n"
            "# HELP kv_bytes_total Bytes.\n# TYPE kv_bytes_total counter\nkv_bytes_total 4096\n");
}

TEST(CallbackFamilyTest, RemoveStopsTheCallsAndDuplicatesAreRefused) {
  Registry r;
  int calls = 0;
  CallbackFamily* f = *r.AddCallbackGauge("g", "G.");
  ASSERT_TRUE(f->Add({{"a", "1"}, {"b", "2"}}, [&] { return static_cast<double>(++calls); }).ok());
  EXPECT_EQ(f->Add({{"b", "2"}, {"a", "1"}}, [] { return 0.0; }).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(f->Add({{"c", "1"}}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->Add({{"c", "1"}, {"c", "2"}}, [] { return 0.0; }).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Serialize(), "# HELP g G.\n# TYPE g gauge\ng{a=\"1\",b=\"2\"} 1\n");
  EXPECT_FALSE(f->Remove({{"a", "1"}}));
  EXPECT_TRUE(f->Remove({{"b", "2"}, {"a", "1"}}));
  EXPECT_FALSE(f->Remove({{"b", "2"}, {"a", "1"}}));
  EXPECT_EQ(r.Serialize(), "");
  EXPECT_EQ(calls, 1);
}

TEST(CollectorFamilyTest, ChildrenComeAndGoWithTheCollectFunction) {
  Registry r;
  std::vector<Sample> samples = {{{{"worker", "d1"}, {"role", "decode"}}, 1}, {{{"role", "prefill"}, {"worker", "p0"}}, 0}};
  CollectorFamily* up = *r.AddCollectorGauge("worker_up", "Up.", [&] { return samples; });
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(r.Serialize(),
            "# HELP worker_up Up.\n# TYPE worker_up gauge\n"
            "worker_up{role=\"decode\",worker=\"d1\"} 1\n"
            "worker_up{role=\"prefill\",worker=\"p0\"} 0\n");
  // An invalid label set and a repeated one are dropped, the rest written.
  samples = {{{{"worker", "d2"}}, 1}, {{{"__bad", "x"}}, 1}, {{{"worker", "d2"}}, 5}};
  EXPECT_EQ(r.Serialize(), "# HELP worker_up Up.\n# TYPE worker_up gauge\nworker_up{worker=\"d2\"} 1\n");
  samples.clear();
  EXPECT_EQ(r.Serialize(), "");
  ASSERT_TRUE(r.AddCollectorCounter("c_total", "C.", [] { return std::vector<Sample>{{{}, 3}}; }).ok());
  EXPECT_EQ(r.Serialize(), "# HELP c_total C.\n# TYPE c_total counter\nc_total 3\n");
  EXPECT_EQ(r.AddCollectorGauge("e", "E.", nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCollectorGauge("worker_up", "Again.", [] { return std::vector<Sample>{}; }).status().code(),
            absl::StatusCode::kAlreadyExists);
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
}

}  // namespace
}  // namespace tandem::metrics
