// tandem-bench's flags: defaults, load modes, length forms, sweeps, errors.
#include "bench/load/bench_config.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

absl::StatusOr<BenchConfig> Parse(std::vector<std::string> args) { return ParseBenchFlags(args, nullptr); }

TEST(BenchConfigTest, Defaults) {
  auto c = Parse({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->addr, "127.0.0.1:50051");
  EXPECT_EQ(c->backend, Backend::kGrpc);
  EXPECT_EQ(c->num_requests, 100);
  EXPECT_EQ(c->dataset.kind, DatasetKind::kRandom);
  EXPECT_EQ(c->dataset.input_len, (LengthRange{128, 128}));
  EXPECT_EQ(c->dataset.output_len, (LengthRange{64, 64}));
  const std::vector<LoadPoint> points = c->Points();
  ASSERT_EQ(points.size(), 1u);
  EXPECT_TRUE(std::isinf(points[0].arrivals.request_rate));
  EXPECT_EQ(points[0].max_concurrency, 0);
  EXPECT_EQ(points[0].label, "rate=inf");
}

TEST(BenchConfigTest, LoadModes) {
  auto rate = Parse({"--request-rate", "2.5", "--burstiness=0.5"});
  ASSERT_TRUE(rate.ok()) << rate.status();
  EXPECT_EQ(rate->Points()[0].arrivals.request_rate, 2.5);
  EXPECT_EQ(rate->Points()[0].arrivals.burstiness, 0.5);
  EXPECT_EQ(rate->Points()[0].label, "rate=2.5");

  auto closed = Parse({"--concurrency", "8"});
  ASSERT_TRUE(closed.ok());
  EXPECT_TRUE(std::isinf(closed->Points()[0].arrivals.request_rate));
  EXPECT_EQ(closed->Points()[0].max_concurrency, 8);
  EXPECT_EQ(closed->Points()[0].label, "concurrency=8");

  auto both = Parse({"--request-rate", "4", "--concurrency", "2"});
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->Points()[0].label, "rate=4,concurrency=2");
  EXPECT_EQ(both->Points()[0].max_concurrency, 2);

  auto inf = Parse({"--request-rate", "inf"});
  ASSERT_TRUE(inf.ok()) << inf.status();
  EXPECT_TRUE(std::isinf(inf->Points()[0].arrivals.request_rate));
}

TEST(BenchConfigTest, LengthsFixedOrRanged) {
  auto fixed = Parse({"--input-len", "16", "--output-len", "4"});
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->dataset.input_len, (LengthRange{16, 16}));
  EXPECT_EQ(fixed->dataset.output_len, (LengthRange{4, 4}));
  auto ranged = Parse({"--input-len-range", "8:24", "--output-len-range=2:6"});
  ASSERT_TRUE(ranged.ok());
  EXPECT_EQ(ranged->dataset.input_len, (LengthRange{8, 24}));
  EXPECT_EQ(ranged->dataset.output_len, (LengthRange{2, 6}));
  EXPECT_FALSE(Parse({"--input-len", "8", "--input-len-range", "8:9"}).ok());
  EXPECT_FALSE(Parse({"--output-len-range", "9:8"}).ok());
  EXPECT_FALSE(Parse({"--dataset", "sharegpt-like", "--output-len", "8"}).ok());
  EXPECT_FALSE(Parse({"--input-len", "250"}).ok());  // 250 + 64 > 256
  EXPECT_TRUE(Parse({"--input-len", "250", "--max-model-len", "4096"}).ok());
}

TEST(BenchConfigTest, OutputLengthChoices) {
  auto c = Parse({"--input-len-range", "16:64", "--output-len-choices", "64,128,256", "--max-model-len", "512"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.output_len_choices, (std::vector<int64_t>{64, 128, 256}));
  EXPECT_FALSE(Parse({"--output-len-choices", "64,128", "--output-len", "8", "--max-model-len", "512"}).ok());
  EXPECT_FALSE(Parse({"--output-len-choices", "64,,8", "--max-model-len", "512"}).ok());
  EXPECT_FALSE(Parse({"--output-len-choices", "4:8", "--max-model-len", "512"}).ok());
  EXPECT_FALSE(Parse({"--output-len-choices", "64,256"}).ok());  // 128 + 256 > 256
}

TEST(BenchConfigTest, Datasets) {
  auto prefix = Parse({"--dataset", "prefix", "--prefix-len", "32", "--input-len", "8"});
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(prefix->dataset.kind, DatasetKind::kPrefix);
  EXPECT_EQ(prefix->dataset.prefix_len, 32);
  EXPECT_EQ(Parse({"--dataset", "sharegpt"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Parse({"--prefix-len", "4"}).ok());  // random has no prefix
}

TEST(BenchConfigTest, Sweeps) {
  auto rates = ParseSweep("rates=1, 2,inf");
  ASSERT_TRUE(rates.ok());
  EXPECT_EQ(rates->kind, SweepKind::kRate);
  ASSERT_EQ(rates->values.size(), 3u);
  EXPECT_EQ(rates->values[1], 2.0);
  EXPECT_TRUE(std::isinf(rates->values[2]));
  auto conc = ParseSweep("concurrency=1,4,16");
  ASSERT_TRUE(conc.ok());
  EXPECT_EQ(conc->kind, SweepKind::kConcurrency);
  EXPECT_EQ(conc->values, (std::vector<double>{1, 4, 16}));
  EXPECT_FALSE(ParseSweep("concurrency=1.5").ok());
  EXPECT_FALSE(ParseSweep("concurrency=0").ok());
  EXPECT_FALSE(ParseSweep("rates=").ok());
  EXPECT_FALSE(ParseSweep("qps=1").ok());
  EXPECT_FALSE(ParseSweep("1,2").ok());
}

TEST(BenchConfigTest, SweepPoints) {
  auto c = Parse({"--sweep", "concurrency=1,4", "--request-rate", "3", "--json-out", "out/s.json"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<LoadPoint> points = c->Points();
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].label, "rate=3,concurrency=1");
  EXPECT_EQ(points[1].max_concurrency, 4);
  EXPECT_EQ(points[1].arrivals.request_rate, 3.0);
  EXPECT_EQ(c->PlotPath(), "out/s.png");

  auto r = Parse({"--sweep", "rates=1,2", "--concurrency", "5", "--json-out", "s", "--plot-out", "p.png"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->Points()[1].label, "rate=2,concurrency=5");
  EXPECT_EQ(r->PlotPath(), "p.png");

  EXPECT_FALSE(Parse({"--sweep", "rates=1"}).ok());  // nowhere to write
}

TEST(BenchConfigTest, RejectsBadValues) {
  EXPECT_FALSE(Parse({"--request-rate", "0"}).ok());
  EXPECT_FALSE(Parse({"--burstiness", "0"}).ok());
  EXPECT_FALSE(Parse({"--num-requests", "0"}).ok());
  EXPECT_FALSE(Parse({"--warmup", "-1"}).ok());
  EXPECT_FALSE(Parse({"--concurrency", "-1"}).ok());
  EXPECT_FALSE(Parse({"--slo-ttft-ms", "0"}).ok());
  EXPECT_FALSE(Parse({"--no-such-flag"}).ok());
  EXPECT_FALSE(Parse({"--num-requests", "many"}).ok());
}

TEST(BenchConfigTest, SlosAndSampling) {
  auto c = Parse({"--slo-ttft-ms", "200", "--slo-tpot-ms", "20", "--ignore-eos", "--temperature", "0", "--seed",
                  "7"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->slo.ttft_ms, 200.0);
  EXPECT_EQ(c->slo.tpot_ms, 20.0);
  EXPECT_TRUE(c->ignore_eos);
  EXPECT_EQ(c->temperature, 0.0f);
  EXPECT_EQ(c->seed, 7u);
}

TEST(BenchConfigTest, Backends) {
  auto c = Parse({"--backend", "openai", "--base-url", "http://127.0.0.1:8080/v1/", "--model", "m"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend, Backend::kOpenAi);
  EXPECT_EQ(c->base_url, "http://127.0.0.1:8080/v1");  // trailing '/' dropped
  EXPECT_EQ(c->model, "m");
  c = Parse({"--backend", "openai", "--base-url", "https://h/v1"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model, "");  // looked up at start
  auto missing = Parse({"--backend", "openai"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--base-url"), std::string::npos);
  EXPECT_FALSE(Parse({"--backend", "openai", "--base-url", "127.0.0.1:8080"}).ok());  // no scheme
  EXPECT_FALSE(Parse({"--backend", "rest"}).ok());
  EXPECT_FALSE(Parse({"--base-url", "http://h/v1"}).ok());  // grpc takes --addr
}

}  // namespace
}  // namespace tandem::bench
