// The aggregate report over hand-made records: three completed requests
// (trace_fixtures.h A, B, C) and three failures, over 2 s.
#include "bench/load/report.h"

#include "bench/load/report_output.h"
#include "gtest/gtest.h"
#include "tests/unit/bench/trace_fixtures.h"

namespace tandem::bench {
namespace {

RequestRecord Ok(RequestTrace trace, int64_t prompt_tokens, int64_t output_len) {
  RequestRecord r;
  r.trace = std::move(trace);
  r.requested_input_tokens = prompt_tokens;
  r.requested_output_tokens = output_len;
  r.usage_prompt_tokens = prompt_tokens;
  r.usage_completion_tokens = output_len;
  r.finish_reason = "length";
  return r;
}

RequestRecord Failed(absl::Status status) {
  RequestRecord r;
  r.status = std::move(status);
  r.requested_input_tokens = 100;  // failed requests add no tokens
  r.requested_output_tokens = 100;
  return r;
}

std::vector<RequestRecord> Records() {
  return {Ok(testing::TraceA(), 7, 5), Failed(absl::UnavailableError("refused")),
          Ok(testing::TraceB(), 3, 4), Failed(absl::DeadlineExceededError("late")),
          Ok(testing::TraceC(), 4, 1), Failed(absl::UnavailableError("refused again"))};
}

constexpr int64_t kTwoSecondsNs = 2'000'000'000;

TEST(BenchReportTest, CountsTokensAndThroughput) {
  const BenchReport r = BuildReport(Records(), kTwoSecondsNs, {});
  EXPECT_EQ(r.duration_s, 2.0);
  EXPECT_EQ(r.num_requests, 6);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.failed, 3);
  EXPECT_EQ(r.total_input_tokens, 14);
  EXPECT_EQ(r.total_output_tokens, 10);
  EXPECT_EQ(r.total_requested_input_tokens, 14);
  EXPECT_EQ(r.total_requested_output_tokens, 10);
  EXPECT_EQ(r.request_throughput, 1.5);
  EXPECT_EQ(r.output_throughput, 5.0);
  EXPECT_EQ(r.total_token_throughput, 12.0);
}

TEST(BenchReportTest, GroupsFailuresByCode) {
  const BenchReport r = BuildReport(Records(), kTwoSecondsNs, {});
  const std::map<std::string, int64_t> want = {{"UNAVAILABLE", 2}, {"DEADLINE_EXCEEDED", 1}};
  EXPECT_EQ(r.failures, want);
  EXPECT_EQ(r.failure_examples.at("UNAVAILABLE"), "refused");  // the first one
  EXPECT_EQ(r.failure_examples.at("DEADLINE_EXCEEDED"), "late");
}

TEST(BenchReportTest, SummarizesLatencies) {
  const BenchReport r = BuildReport(Records(), kTwoSecondsNs, {});
  // TTFT [10, 20, 8] -> sorted [8, 10, 20].
  EXPECT_EQ(r.ttft_ms.count, 3);
  EXPECT_DOUBLE_EQ(r.ttft_ms.mean, 38.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.ttft_ms.p50, 10.0);
  EXPECT_DOUBLE_EQ(r.ttft_ms.p90, 18.0);  // position 1.8: 10 + 0.8 * 10
  EXPECT_DOUBLE_EQ(r.ttft_ms.p99, 19.8);
  // TPOT [25, 20/3] (C has one token, so none).
  EXPECT_EQ(r.tpot_ms.count, 2);
  EXPECT_DOUBLE_EQ(r.tpot_ms.mean, (25.0 + 20.0 / 3.0) / 2.0);
  EXPECT_DOUBLE_EQ(r.tpot_ms.p50, (25.0 + 20.0 / 3.0) / 2.0);
  EXPECT_DOUBLE_EQ(r.tpot_ms.p90, 20.0 / 3.0 + 0.9 * (25.0 - 20.0 / 3.0));
  EXPECT_DOUBLE_EQ(r.tpot_ms.p99, 20.0 / 3.0 + 0.99 * (25.0 - 20.0 / 3.0));
  // ITL: A [20, 10, 10, 10] + B [0, 10, 10] -> sorted [0, 10, 10, 10, 10, 10, 20].
  EXPECT_EQ(r.itl_ms.count, 7);
  EXPECT_DOUBLE_EQ(r.itl_ms.mean, 10.0);
  EXPECT_DOUBLE_EQ(r.itl_ms.p50, 10.0);
  EXPECT_DOUBLE_EQ(r.itl_ms.p90, 14.0);  // position 5.4
  EXPECT_DOUBLE_EQ(r.itl_ms.p99, 19.4);  // position 5.94
  // E2E [110, 40, 9] -> sorted [9, 40, 110].
  EXPECT_EQ(r.e2el_ms.count, 3);
  EXPECT_DOUBLE_EQ(r.e2el_ms.mean, 53.0);
  EXPECT_DOUBLE_EQ(r.e2el_ms.p50, 40.0);
  EXPECT_DOUBLE_EQ(r.e2el_ms.p90, 96.0);
  EXPECT_DOUBLE_EQ(r.e2el_ms.p99, 108.6);
}

TEST(BenchReportTest, GoodputChecksEverySetSlo) {
  // A: TTFT 10 ok, TPOT 25 > 10. B: TTFT 20 > 15. C: TTFT 8 ok, no TPOT -> good.
  const BenchReport both = BuildReport(Records(), kTwoSecondsNs, {15.0, 10.0});
  EXPECT_EQ(both.good_requests, 1);
  EXPECT_EQ(both.goodput, 0.5);
  // TPOT <= 25 only: A (exactly 25), B (20/3) and C pass.
  const BenchReport tpot = BuildReport(Records(), kTwoSecondsNs, {std::nullopt, 25.0});
  EXPECT_EQ(tpot.good_requests, 3);
  EXPECT_EQ(tpot.goodput, 1.5);
  // TTFT <= 9.99 only: C.
  const BenchReport ttft = BuildReport(Records(), kTwoSecondsNs, {9.99, std::nullopt});
  EXPECT_EQ(ttft.good_requests, 1);
  EXPECT_EQ(ttft.goodput, 0.5);
}

TEST(BenchReportTest, NoSloNoGoodput) {
  const BenchReport r = BuildReport(Records(), kTwoSecondsNs, {});
  EXPECT_FALSE(r.goodput.has_value());
  EXPECT_TRUE(ReportToJson(r)["goodput"].is_null());
}

TEST(BenchReportTest, AllFailedHasEmptySummaries) {
  const BenchReport r = BuildReport({Failed(absl::UnavailableError("x"))}, 0, {5.0, std::nullopt});
  EXPECT_EQ(r.completed, 0);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.ttft_ms.count, 0);
  EXPECT_EQ(r.request_throughput, 0);
  EXPECT_EQ(r.goodput, 0.0);
  const nlohmann::json j = ReportToJson(r);
  EXPECT_TRUE(j["ttft_ms"].is_null());
  EXPECT_EQ(j["failures"]["UNAVAILABLE"]["count"], 1);
  EXPECT_EQ(j["failures"]["UNAVAILABLE"]["first_message"], "x");
}

TEST(BenchReportTest, JsonCarriesTheNumbers) {
  const nlohmann::json j = ReportToJson(BuildReport(Records(), kTwoSecondsNs, {15.0, 10.0}));
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["failed"], 3);
  EXPECT_EQ(j["total_output_tokens"], 10);
  EXPECT_EQ(j["goodput"], 0.5);
  EXPECT_EQ(j["slo"]["ttft_ms"], 15.0);
  EXPECT_EQ(j["e2el_ms"]["p50"], 40.0);
  EXPECT_EQ(j["itl_ms"]["count"], 7);
  const nlohmann::json per_request = RecordsToJson(Records());
  ASSERT_EQ(per_request.size(), 6u);
  EXPECT_EQ(per_request[0]["output_tokens"], 5);
  EXPECT_EQ(per_request[0]["itls_ms"], nlohmann::json({20.0, 10.0, 10.0, 10.0}));
  EXPECT_EQ(per_request[1]["status"], "UNAVAILABLE");
  EXPECT_EQ(per_request[1]["error"], "refused");
  EXPECT_TRUE(per_request[4]["tpot_ms"].is_null());
}

}  // namespace
}  // namespace tandem::bench
