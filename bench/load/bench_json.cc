#include "bench/load/bench_json.h"

#include <cmath>

#include "bench/load/report_output.h"

namespace tandem::bench {
namespace {

// JSON has no infinity: an unbounded rate is the string "inf".
nlohmann::json Rate(double rate) {
  return std::isinf(rate) ? nlohmann::json("inf") : nlohmann::json(rate);
}

}  // namespace

nlohmann::json ConfigToJson(const BenchConfig& c) {
  const DatasetConfig& d = c.dataset;
  nlohmann::json j = {
      {"backend", c.backend == Backend::kOpenAi ? "openai" : "grpc"},
      {"addr", c.addr},
      {"request_rate", Rate(c.request_rate.value_or(INFINITY))},
      {"burstiness", c.burstiness},
      {"concurrency", c.concurrency},
      {"num_requests", c.num_requests},
      {"warmup", c.warmup},
      {"seed", c.seed},
      {"dataset", DatasetKindName(d.kind)},
      {"input_len", {d.input_len.min, d.input_len.max}},
      {"output_len", {d.output_len.min, d.output_len.max}},
      {"output_len_choices", d.output_len_choices},
      {"prefix_len", d.prefix_len},
      {"vocab_size", d.vocab_size},
      {"max_model_len", d.max_model_len},
      {"ignore_eos", c.ignore_eos},
      {"timeout_s", c.timeout_s},
  };
  if (c.temperature) j["temperature"] = *c.temperature;
  if (c.backend == Backend::kOpenAi) {
    j["base_url"] = c.base_url;
    j["model"] = c.model;
  }
  return j;
}

nlohmann::json PointToJson(const PointResult& r, bool detailed) {
  nlohmann::json j = ReportToJson(r.report);
  j["label"] = r.point.label;
  j["request_rate"] = Rate(r.point.arrivals.request_rate);
  j["max_concurrency"] = r.point.max_concurrency;
  j["warmup_completed"] = r.warmup_completed;
  j["warmup_failed"] = r.warmup_failed;
  if (detailed) j["requests"] = RecordsToJson(r.records);
  return j;
}

}  // namespace tandem::bench
