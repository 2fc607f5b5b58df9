// Concurrency: increments and observations from several threads sum exactly,
// children are created once however many threads ask, scrapes run beside.
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

constexpr int kThreads = 8;
constexpr int kPerThread = 20000;

// Runs fn(thread index) on kThreads threads and joins them.
template <typename Fn>
void OnThreads(Fn fn) {
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(fn, t);
  for (std::thread& th : threads) th.join();
}

TEST(ConcurrencyTest, CounterIncrementsFromManyThreadsSumExactly) {
  Registry r;
  Family<Counter>* f = *r.AddCounter("x_total", "x");
  std::vector<Counter*> seen(kThreads);
  OnThreads([&](int t) {
    Counter* c = *f->Add({{"k", "shared"}});  // every thread asks for the same child
    seen[t] = c;
    for (int i = 0; i < kPerThread; ++i) c->Increment();
    Counter* own = *f->Add({{"k", absl::StrCat("t", t)}});
    for (int i = 0; i < kPerThread; ++i) own->Increment(2);
  });
  for (Counter* c : seen) EXPECT_EQ(c, seen[0]);
  EXPECT_EQ(seen[0]->Value(), static_cast<double>(kThreads) * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ((*f->Add({{"k", absl::StrCat("t", t)}}))->Value(), 2.0 * kPerThread);
  }
}

TEST(ConcurrencyTest, GaugeUpsAndDownsCancelExactly) {
  Gauge g;
  OnThreads([&](int t) {
    for (int i = 0; i < kPerThread; ++i) {
      if (t % 2 == 0) {
        g.Increment(3);
      } else {
        g.Decrement(3);
      }
    }
  });
  EXPECT_EQ(g.Value(), 0);
}

TEST(ConcurrencyTest, HistogramObservationsCountExactlyWhileScraped) {
  Registry r;
  Family<Histogram>* f = *r.AddHistogram("lat_seconds", "l", std::vector<double>{0.25, 0.5, 1});
  Histogram* h = *f->Add({});
  std::thread scraper([&] {
    for (int i = 0; i < 200; ++i) {
      const Histogram::Snapshot s = h->Collect();
      // Derived from one read of each bucket: never inconsistent.
      ASSERT_EQ(s.cumulative.back(), s.count);
      for (size_t b = 1; b < s.cumulative.size(); ++b) ASSERT_LE(s.cumulative[b - 1], s.cumulative[b]);
      ASSERT_FALSE(r.Serialize().empty());
    }
  });
  // Values exact in binary: the concurrent sum is exact too.
  const double values[4] = {0.25, 0.5, 0.75, 2.0};
  OnThreads([&](int t) {
    for (int i = 0; i < kPerThread; ++i) h->Observe(values[(t + i) % 4]);
  });
  scraper.join();
  const Histogram::Snapshot s = h->Collect();
  const uint64_t n = static_cast<uint64_t>(kThreads) * kPerThread;
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{n / 4, n / 2, 3 * n / 4, n}));
  EXPECT_EQ(s.sum, (0.25 + 0.5 + 0.75 + 2.0) * static_cast<double>(n / 4));
}

}  // namespace
}  // namespace tandem::metrics
