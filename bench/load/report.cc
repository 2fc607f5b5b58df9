#include "bench/load/report.h"

namespace tandem::bench {

bool MeetsSlo(const RequestMetrics& m, const SloConfig& slo) {
  if (slo.ttft_ms && !(m.ttft_ms && *m.ttft_ms <= *slo.ttft_ms)) return false;
  if (slo.tpot_ms && m.tpot_ms && *m.tpot_ms > *slo.tpot_ms) return false;
  return true;
}

BenchReport BuildReport(const std::vector<RequestRecord>& records, int64_t duration_ns, const SloConfig& slo) {
  BenchReport r;
  r.duration_s = static_cast<double>(duration_ns) / 1e9;
  r.num_requests = static_cast<int64_t>(records.size());
  r.slo = slo;
  std::vector<double> ttfts, itls, tpots, e2els;
  for (const RequestRecord& rec : records) {
    if (!rec.status.ok()) {
      ++r.failed;
      const std::string code = absl::StatusCodeToString(rec.status.code());
      ++r.failures[code];
      r.failure_examples.try_emplace(code, std::string(rec.status.message()));
      continue;
    }
    ++r.completed;
    const RequestMetrics m = ComputeRequestMetrics(rec.trace);
    r.total_input_tokens += rec.usage_prompt_tokens;
    r.total_output_tokens += m.output_tokens;
    r.total_requested_input_tokens += rec.requested_input_tokens;
    r.total_requested_output_tokens += rec.requested_output_tokens;
    if (m.ttft_ms) ttfts.push_back(*m.ttft_ms);
    if (m.tpot_ms) tpots.push_back(*m.tpot_ms);
    itls.insert(itls.end(), m.itls_ms.begin(), m.itls_ms.end());
    e2els.push_back(m.e2e_ms);
    if (MeetsSlo(m, slo)) ++r.good_requests;
  }
  const double s = r.duration_s;
  if (s > 0) {
    r.request_throughput = static_cast<double>(r.completed) / s;
    r.output_throughput = static_cast<double>(r.total_output_tokens) / s;
    r.total_token_throughput = static_cast<double>(r.total_input_tokens + r.total_output_tokens) / s;
  }
  if (slo.any()) r.goodput = s > 0 ? static_cast<double>(r.good_requests) / s : 0.0;
  r.ttft_ms = Summarize(std::move(ttfts));
  r.itl_ms = Summarize(std::move(itls));
  r.tpot_ms = Summarize(std::move(tpots));
  r.e2el_ms = Summarize(std::move(e2els));
  return r;
}

}  // namespace tandem::bench
