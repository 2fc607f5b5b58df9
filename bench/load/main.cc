// tandem-bench: the load generator. Sends synthetic Generate streams to a
// Tandem endpoint (router or `tandem serve`), or streamed completions to an
// OpenAI-compatible server (--backend openai), at a request rate and/or
// concurrency, and reports throughput, TTFT/TPOT/ITL/E2E percentiles and
// goodput; --sweep runs several load points and plots them. See docs/bench.md.
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "bench/load/bench_config.h"
#include "bench/load/bench_json.h"
#include "bench/load/dataset.h"
#include "bench/load/grpc_backend.h"
#include "bench/load/load_runner.h"
#include "bench/load/openai_call.h"
#include "bench/load/report_output.h"
#include "bench/load/sweep_plot.h"
#include "grpcpp/grpcpp.h"

namespace tandem::bench {
namespace {


absl::Status WriteJson(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

PointResult RunPoint(LoadRunner& runner, const BenchConfig& config, const LoadPoint& point,
                     const std::vector<BenchRequest>& measured, const std::vector<BenchRequest>& warmup) {
  const uint64_t arrival_seed = MeasuredArrivalSeed(config.seed);
  PointResult result;
  result.point = point;
  if (!warmup.empty()) {
    const RunResult w = runner.Run(warmup, point, arrival_seed + 1, "bench-warmup-");
    for (const RequestRecord& r : w.records) ++(r.status.ok() ? result.warmup_completed : result.warmup_failed);
    std::cout << "tandem-bench: " << point.label << ": warmup " << result.warmup_completed << " completed, "
              << result.warmup_failed << " failed\n";
  }
  RunResult run = runner.Run(measured, point, arrival_seed, "bench-");
  result.report = BuildReport(run.records, run.duration_ns, config.slo);
  result.records = std::move(run.records);
  std::cout << FormatReportTable(result.report, "tandem-bench " + point.label) << std::flush;
  return result;
}

int Main(int argc, char** argv) {
  std::string usage;
  auto parsed = ParseBenchFlags(std::vector<std::string>(argv + 1, argv + argc), &usage);
  if (!parsed.ok()) {
    std::cerr << "tandem-bench: " << parsed.status().message() << "\nflags:\n" << usage;
    return 2;
  }
  BenchConfig& config = *parsed;
  if (config.help) {
    std::cout << "usage: tandem-bench [--addr HOST:PORT | --backend openai --base-url URL [--model NAME]] "
                 "[--request-rate R] [--concurrency C] [--dataset random|sharegpt-like|prefix] [flags]\n"
              << usage;
    return 0;
  }
  if (config.backend == Backend::kOpenAi && config.model.empty()) {
    auto model = FetchFirstModelId(config.base_url, config.api_key, std::min<int64_t>(config.timeout_s, 30));
    if (!model.ok()) {
      std::cerr << "tandem-bench: --backend openai: cannot find the model to ask for: " << model.status().message()
                << "\n(is the server up at --base-url? or give --model NAME)\n";
      return 1;
    }
    config.model = *model;
    std::cout << "tandem-bench: model " << config.model << " (the first of " << config.base_url << "/models)\n";
  }
  if (config.sweep) {
    // Fail before the sweep runs, not after.
    if (auto g = FindOnPath("gnuplot"); !g.ok()) {
      std::cerr << "tandem-bench: --sweep plots with gnuplot, which is not on PATH: install gnuplot-nox "
                   "(scripts/install_deps.sh)\n";
      return 1;
    }
  }

  // One draw of num_requests + warmup: the measured requests are the first
  // num_requests whatever --warmup is (GenerateDataset draws sequentially).
  std::vector<BenchRequest> all = GenerateDataset(config.dataset, config.num_requests + config.warmup, config.seed);
  const std::vector<BenchRequest> warmup(all.begin() + config.num_requests, all.end());
  all.resize(config.num_requests);

  const RequestOptions options{config.ignore_eos, config.temperature, config.timeout_s, config.api_key};
  LoadRunner runner(config.backend == Backend::kOpenAi
                        ? MakeOpenAiBackend({config.base_url, config.model, options})
                        : MakeGrpcBackend(grpc::CreateChannel(config.addr, grpc::InsecureChannelCredentials()),
                                          options));
  std::vector<PointResult> results;
  for (const LoadPoint& point : config.Points()) results.push_back(RunPoint(runner, config, point, all, warmup));

  nlohmann::json out;
  if (!config.sweep) {
    out = PointToJson(results[0], config.json_detailed);
    out["config"] = ConfigToJson(config);
  } else {
    const std::string png = config.PlotPath();
    std::vector<SweepPoint> points;
    for (const PointResult& r : results) points.push_back({r.point.label, r.report});
    if (absl::Status st = WriteSweepPlot(points, png); !st.ok()) {
      std::cerr << "tandem-bench: " << st.message() << "\n";
      return 1;
    }
    std::cout << "tandem-bench: plot written to " << png << "\n";
    out = {{"config", ConfigToJson(config)},
           {"sweep", {{"kind", config.sweep->kind == SweepKind::kRate ? "rate" : "concurrency"}}},
           {"points", nlohmann::json::array()},
           {"plot", png}};
    for (const PointResult& r : results) out["points"].push_back(PointToJson(r, config.json_detailed));
  }
  if (!config.json_out.empty()) {
    if (absl::Status st = WriteJson(config.json_out, out); !st.ok()) {
      std::cerr << "tandem-bench: " << st.message() << "\n";
      return 1;
    }
    std::cout << "tandem-bench: results written to " << config.json_out << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) { return tandem::bench::Main(argc, argv); }
