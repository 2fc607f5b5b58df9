#include "bench/load/report_output.h"

#include "absl/strings/str_format.h"

namespace tandem::bench {
namespace {

nlohmann::json SummaryJson(const LatencySummary& s) {
  if (s.count == 0) return nullptr;
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}};
}

std::string Row(const char* name, const LatencySummary& s) {
  if (s.count == 0) return absl::StrFormat("%-10s %10s %10s %10s %10s\n", name, "-", "-", "-", "-");
  return absl::StrFormat("%-10s %10.2f %10.2f %10.2f %10.2f\n", name, s.mean, s.p50, s.p90, s.p99);
}

template <typename T>
std::string Line(const char* name, const T& value) {
  // `else`: clang checks the format of a branch that is not discarded.
  if constexpr (std::is_floating_point_v<T>) {
    return absl::StrFormat("%-34s %12.2f\n", name, value);
  } else {
    return absl::StrFormat("%-34s %12d\n", name, value);
  }
}

}  // namespace

std::string FormatReportTable(const BenchReport& r, const std::string& title) {
  std::string out = absl::StrFormat("%s\n", std::string(56, '='));
  out += absl::StrFormat("%s\n%s\n", title, std::string(56, '='));
  out += Line("Completed requests", r.completed);
  out += Line("Failed requests", r.failed);
  for (const auto& [code, count] : r.failures) {
    out += absl::StrFormat("  %-32s %12d  (first: %s)\n", code, count, r.failure_examples.at(code));
  }
  out += Line("Duration (s)", r.duration_s);
  out += Line("Total input tokens", r.total_input_tokens);
  out += Line("Total output tokens", r.total_output_tokens);
  out += Line("Request throughput (req/s)", r.request_throughput);
  out += Line("Output token throughput (tok/s)", r.output_throughput);
  out += Line("Total token throughput (tok/s)", r.total_token_throughput);
  if (r.goodput) {
    std::string slo;
    if (r.slo.ttft_ms) slo += absl::StrFormat("TTFT <= %g ms", *r.slo.ttft_ms);
    if (r.slo.tpot_ms) slo += absl::StrFormat("%sTPOT <= %g ms", slo.empty() ? "" : ", ", *r.slo.tpot_ms);
    out += Line("Goodput (req/s)", *r.goodput);
    out += absl::StrFormat("  SLO: %s; %d of %d completed met it\n", slo, r.good_requests, r.completed);
  }
  out += absl::StrFormat("%s\n", std::string(56, '-'));
  out += absl::StrFormat("%-10s %10s %10s %10s %10s\n", "(ms)", "mean", "p50", "p90", "p99");
  out += Row("TTFT", r.ttft_ms);
  out += Row("TPOT", r.tpot_ms);
  out += Row("ITL", r.itl_ms);
  out += Row("E2E", r.e2el_ms);
  out += absl::StrFormat("%s\n", std::string(56, '='));
  return out;
}

nlohmann::json ReportToJson(const BenchReport& r) {
  nlohmann::json slo = nlohmann::json::object();
  if (r.slo.ttft_ms) slo["ttft_ms"] = *r.slo.ttft_ms;
  if (r.slo.tpot_ms) slo["tpot_ms"] = *r.slo.tpot_ms;
  nlohmann::json failures = nlohmann::json::object();
  for (const auto& [code, count] : r.failures) {
    failures[code] = {{"count", count}, {"first_message", r.failure_examples.at(code)}};
  }
  return {
      {"duration_s", r.duration_s},
      {"num_requests", r.num_requests},
      {"completed", r.completed},
      {"failed", r.failed},
      {"failures", failures},
      {"total_input_tokens", r.total_input_tokens},
      {"total_output_tokens", r.total_output_tokens},
      {"total_requested_input_tokens", r.total_requested_input_tokens},
      {"total_requested_output_tokens", r.total_requested_output_tokens},
      {"request_throughput", r.request_throughput},
      {"output_throughput", r.output_throughput},
      {"total_token_throughput", r.total_token_throughput},
      {"ttft_ms", SummaryJson(r.ttft_ms)},
      {"tpot_ms", SummaryJson(r.tpot_ms)},
      {"itl_ms", SummaryJson(r.itl_ms)},
      {"e2el_ms", SummaryJson(r.e2el_ms)},
      {"slo", slo},
      {"good_requests", r.good_requests},
      {"goodput", r.goodput ? nlohmann::json(*r.goodput) : nlohmann::json(nullptr)},
  };
}

nlohmann::json RecordsToJson(const std::vector<RequestRecord>& records) {
  nlohmann::json out = nlohmann::json::array();
  for (const RequestRecord& rec : records) {
    const RequestMetrics m = ComputeRequestMetrics(rec.trace);
    nlohmann::json j = {
        {"status", absl::StatusCodeToString(rec.status.code())},
        {"requested_input_tokens", rec.requested_input_tokens},
        {"requested_output_tokens", rec.requested_output_tokens},
        {"output_tokens", m.output_tokens},
        {"num_chunks", rec.trace.chunks.size()},
        {"usage_prompt_tokens", rec.usage_prompt_tokens},
        {"usage_completion_tokens", rec.usage_completion_tokens},
        {"finish_reason", rec.finish_reason},
        {"ttft_ms", m.ttft_ms ? nlohmann::json(*m.ttft_ms) : nlohmann::json(nullptr)},
        {"tpot_ms", m.tpot_ms ? nlohmann::json(*m.tpot_ms) : nlohmann::json(nullptr)},
        {"e2e_ms", m.e2e_ms},
        {"itls_ms", m.itls_ms},
    };
    if (!rec.status.ok()) j["error"] = std::string(rec.status.message());
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace tandem::bench
