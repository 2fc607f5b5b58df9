// The scrape-time collectables (CallbackFamily, CollectorFamily): called at
// every collection with the values of that moment, children in label order,
// bad children refused or dropped, usable as plain prometheus::Collectables
// (prometheus-cpp's own serializer) as well as through the Registry.
#include <string>
#include <vector>

#include "common/metrics/collectables.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace tandem::metrics {
namespace {

std::string Text(const prometheus::Collectable& c) { return prometheus::TextSerializer().Serialize(c.Collect()); }

TEST(CallbackFamilyTest, CalledAtEveryCollectionWithTheCurrentValue) {
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

TEST(CallbackFamilyTest, ChildrenInLabelOrderDuplicatesAndBadOnesRefused) {
  CallbackFamily f("g", "G.", ScrapeType::kGauge);
  EXPECT_EQ(Text(f), "");  // no child, no family
  EXPECT_TRUE(f.Collect().empty());
  ASSERT_TRUE(f.Add({{"w", "b"}}, [] { return 2.0; }).ok());
  ASSERT_TRUE(f.Add({{"w", "a"}, {"x", "1"}}, [] { return 1.0; }).ok());
  EXPECT_EQ(f.Add({{"x", "1"}, {"w", "a"}}, [] { return 0.0; }).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(f.Add({{"c", "1"}}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.Add({{"__c", "1"}}, [] { return 0.0; }).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.Add({{"c d", "1"}}, [] { return 0.0; }).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Text(f), "# HELP g G.\n# TYPE g gauge\ng{w=\"a\",x=\"1\"} 1\ng{w=\"b\"} 2\n");
  const std::vector<prometheus::MetricFamily> families = f.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].type, prometheus::MetricType::Gauge);
  ASSERT_EQ(families[0].metric.size(), 2u);
  EXPECT_EQ(families[0].metric[0].gauge.value, 1.0);
}

TEST(CallbackFamilyTest, CounterValuesGoInTheCounterField) {
  CallbackFamily f("x_total", "X.", ScrapeType::kCounter);
  ASSERT_TRUE(f.Add({}, [] { return 1e21; }).ok());
  const std::vector<prometheus::MetricFamily> families = f.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].type, prometheus::MetricType::Counter);
  EXPECT_EQ(families[0].metric[0].counter.value, 1e21);
  EXPECT_EQ(Text(f), "# HELP x_total X.\n# TYPE x_total counter\nx_total 1e+21\n");
}

TEST(CollectorFamilyTest, ChildrenComeAndGoWithTheFunction) {
  Registry r;
  std::vector<Sample> samples = {{{{"worker", "d1"}, {"role", "decode"}}, 1},
                                 {{{"role", "prefill"}, {"worker", "p0"}}, 0}};
  CollectorFamily* up = *r.AddCollectorGauge("worker_up", "Up.", [&] { return samples; });
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(r.Serialize(),
            "# HELP worker_up Up.\n# TYPE worker_up gauge\n"
            "worker_up{role=\"decode\",worker=\"d1\"} 1\n"
            "worker_up{role=\"prefill\",worker=\"p0\"} 0\n");
  // A bad label name and a repeated label set are dropped, the rest written.
  samples = {{{{"worker", "d2"}}, 1}, {{{"__bad", "x"}}, 1}, {{{"worker", "d2"}}, 5}, {{{"worker", "d0"}}, 0}};
  EXPECT_EQ(r.Serialize(),
            "# HELP worker_up Up.\n# TYPE worker_up gauge\nworker_up{worker=\"d0\"} 0\nworker_up{worker=\"d2\"} 1\n");
  samples.clear();
  EXPECT_EQ(r.Serialize(), "");
}

TEST(CollectorFamilyTest, AsAPlainCollectable) {
  int calls = 0;
  CollectorFamily c("c_total", "C.", ScrapeType::kCounter, [&] {
    ++calls;
    return std::vector<Sample>{{{}, 3}};
  });
  EXPECT_EQ(Text(c), "# HELP c_total C.\n# TYPE c_total counter\nc_total 3\n");
  EXPECT_EQ(Text(c), "# HELP c_total C.\n# TYPE c_total counter\nc_total 3\n");
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace tandem::metrics
