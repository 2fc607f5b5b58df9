// tandem-sim: calibrate a step cost model on the real engine, simulate a
// cluster on a workload, or plan its prefill:decode split for an SLO.
//
//   tandem-sim calibrate --model DIR [--engine-args "..."] [--repeats N]
//              [--workers-share-cores] --out cal.json
//   tandem-sim refit --calibration cal.json --out cal2.json   (fit its samples again)
//   tandem-sim run  --calibration cal.json [--decode-calibration cal.json] --prefill-workers P
//                   --decode-workers D [workload] [cluster]
//   tandem-sim plan --calibration cal.json --workers N --slo-ttft-ms X --slo-tpot-ms Y [workload] [cluster]
//
// The workload flags are tandem-bench's (the same generator, so the same
// prompts as a real run with the same seed). docs/routing.md.
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/load/arrivals.h"
#include "bench/load/dataset.h"
#include "bench/sim/calibrate.h"
#include "bench/sim/cluster_sim.h"
#include "bench/sim/planner.h"
#include "common/cli/cli_flags.h"
#include "common/process/shared_core_omp_env.h"
#include "common/status_macros.h"

namespace tandem::sim {
namespace {

struct Flags {
  // calibrate
  std::string model, engine_args, out, json_out;
  int64_t repeats = 3;
  bool workers_share_cores = false;
  // run / plan
  std::string calibration, decode_calibration;
  int64_t prefill_workers = 1, decode_workers = 1, workers = 0;
  int64_t shared_cores = 0, threads_per_worker = 0;
  std::string routing = "kv-aware";
  std::optional<float> kv_overlap_weight, transfer_gbps, slo_ttft_ms, slo_tpot_ms, request_rate, sharing_efficiency;
  int64_t prefill_kv_blocks = 0, decode_kv_blocks = 0, max_num_seqs = 64, max_prefill_tokens_per_worker = 8192;
  // workload (tandem-bench's)
  std::string dataset = "random";
  int64_t input_len = 128, output_len = 64, prefix_len = 0, num_prefixes = 1, num_requests = 100, concurrency = 0;
  int64_t num_turns = 1;
  int64_t vocab_size = 2000, max_model_len = 256;
  std::optional<uint64_t> seed;
  bool help = false;

  void Register(cli::FlagSet& f) {
    f.AddString("model", &model, "calibrate: the model directory");
    f.AddString("engine-args", &engine_args, "calibrate: worker engine flags, space-separated (default: none)");
    f.AddInt("repeats", &repeats, "calibrate: timings per step shape; the median counts (default 3)");
    f.AddString("out", &out, "calibrate, refit: the calibration JSON to write");
    f.AddBool("workers-share-cores", &workers_share_cores,
              "calibrate: time steps under the OpenMP waiting `tandem up` gives workers that share cores "
              "(OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=1000, unless either is set): for --shared-cores runs");
    f.AddString("calibration", &calibration, "run, plan, refit: a calibration JSON (tandem-sim calibrate)");
    f.AddString("decode-calibration", &decode_calibration,
                "run, plan: decode workers' own calibration, whose decode-step fit they use (other flags or "
                "hardware; default: --calibration's)");
    f.AddInt("prefill-workers", &prefill_workers, "run: prefill workers (default 1)");
    f.AddInt("decode-workers", &decode_workers, "run: decode workers (default 1)");
    f.AddInt("workers", &workers, "plan: workers to split between the roles");
    f.AddInt("shared-cores", &shared_cores,
             "every worker shares this many CPU cores (processor sharing; default 0: cores of their own)");
    f.AddInt("threads-per-worker", &threads_per_worker, "threads each worker steps with (default: OpenMP's)");
    f.AddFloat("sharing-efficiency", &sharing_efficiency,
               "with --shared-cores oversubscribed, the fraction of its fair share a busy worker gets (default 1)");
    f.AddString("routing", &routing, "kv-aware | least-loaded | round-robin (default kv-aware)");
    f.AddFloat("kv-overlap-weight", &kv_overlap_weight, "kv-aware's weight (default 1)");
    f.AddFloat("transfer-gbps", &transfer_gbps, "KV transfer bandwidth in GB/s (default 2)");
    f.AddInt("prefill-kv-blocks", &prefill_kv_blocks, "a prefill worker's KV pool (default: the calibration's)");
    f.AddInt("decode-kv-blocks", &decode_kv_blocks, "a decode worker's KV pool (default: its calibration's)");
    f.AddInt("max-num-seqs", &max_num_seqs, "sequences an engine steps at once (default 64)");
    f.AddInt("max-prefill-tokens-per-worker", &max_prefill_tokens_per_worker, "the router's window (default 8192)");
    f.AddFloat("slo-ttft-ms", &slo_ttft_ms, "a good request's TTFT is at most this");
    f.AddFloat("slo-tpot-ms", &slo_tpot_ms, "a good request's TPOT is at most this");
    f.AddString("dataset", &dataset, "random | sharegpt-like | prefix | multi-turn (default random)");
    f.AddInt("num-turns", &num_turns, "multi-turn: turns per conversation (each the conversation so far + a message)");
    f.AddInt("input-len", &input_len, "prompt ids (prefix: after the prefix) (default 128)");
    f.AddInt("output-len", &output_len, "tokens to generate (default 64)");
    f.AddInt("prefix-len", &prefix_len, "prefix: shared ids (default 0)");
    f.AddInt("num-prefixes", &num_prefixes, "prefix: distinct prefixes (default 1)");
    f.AddInt("num-requests", &num_requests, "requests (default 100)");
    f.AddFloat("request-rate", &request_rate, "requests/s, Poisson (default inf: all at once)");
    f.AddInt("concurrency", &concurrency, "most requests in flight (closed loop; default 0: no cap)");
    f.AddInt("vocab-size", &vocab_size, "prompt ids from [3, vocab-size) (default 2000)");
    f.AddInt("max-model-len", &max_model_len, "the context length requests must fit (default 256)");
    f.AddUint64("seed", &seed, "the dataset's and arrivals' seed (default 0)");
    f.AddString("json-out", &json_out, "run: also write the summary as JSON to this file");
    f.AddBool("help", &help, "show this help");
  }
};

absl::StatusOr<std::vector<SimRequest>> Workload(const Flags& f) {
  bench::DatasetConfig d;
  ASSIGN_OR_RETURN(d.kind, bench::ParseDatasetKind(f.dataset));
  d.num_turns = f.num_turns;
  if (d.kind != bench::DatasetKind::kShareGptLike) {
    d.input_len = {f.input_len, f.input_len};
    d.output_len = {f.output_len, f.output_len};
  }
  d.prefix_len = f.prefix_len;
  d.num_prefixes = f.num_prefixes;
  d.vocab_size = f.vocab_size;
  d.max_model_len = f.max_model_len;
  RETURN_IF_ERROR(d.Validate());
  if (f.num_requests < 1) return absl::InvalidArgumentError("--num-requests must be >= 1");
  if (f.num_requests % d.num_turns != 0) {
    return absl::InvalidArgumentError("--num-requests must be a multiple of --num-turns");
  }
  const uint64_t seed = f.seed.value_or(0);
  const std::vector<bench::BenchRequest> reqs = bench::GenerateDataset(d, f.num_requests, seed);
  bench::ArrivalConfig arrivals{f.request_rate ? *f.request_rate : std::numeric_limits<double>::infinity(), 1.0};
  RETURN_IF_ERROR(arrivals.Validate());
  // The arrival stream tandem-bench draws for the measured requests (one
  // arrival per conversation for multi-turn, its later turns chained).
  const int64_t arrivals_n = f.num_requests / d.num_turns;
  const std::vector<double> at = bench::ArrivalOffsets(arrivals, arrivals_n, bench::MeasuredArrivalSeed(seed));
  std::vector<SimRequest> out;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const bench::BenchRequest& b = reqs[i];
    const int64_t arrival = b.conversation >= 0 ? b.conversation : static_cast<int64_t>(i);
    out.push_back({at[arrival], std::vector<int32_t>(b.prompt_token_ids.begin(), b.prompt_token_ids.end()),
                   b.output_len, b.turn > 0 ? static_cast<int64_t>(i) - 1 : -1});
  }
  return out;
}

absl::StatusOr<Calibration> LoadCalibration(const std::string& path, const std::string& flag, bool shared_cores) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read --" + flag + " " + path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(path + " is not JSON");
  ASSIGN_OR_RETURN(Calibration cal, Calibration::FromJson(j));
  if (shared_cores && j.value("omp_wait_policy", std::string()) != "passive") {
    std::cerr << "tandem-sim: warning: " << path << " was not calibrated under the OpenMP waiting of "
              << "workers that share cores; for --shared-cores, calibrate with --workers-share-cores "
              << "(docs/routing.md)\n";
  }
  return cal;
}

absl::StatusOr<SimConfig> Cluster(const Flags& f) {
  if (f.calibration.empty()) return absl::InvalidArgumentError("--calibration FILE is required");
  ASSIGN_OR_RETURN(Calibration cal, LoadCalibration(f.calibration, "calibration", f.shared_cores > 0));
  // Decode workers on other flags or hardware: their own step cost and pool.
  // The KV layout must be the same, or no prefill worker could ship to them.
  Calibration decode_cal = cal;
  if (!f.decode_calibration.empty()) {
    ASSIGN_OR_RETURN(decode_cal, LoadCalibration(f.decode_calibration, "decode-calibration", f.shared_cores > 0));
    if (decode_cal.block_size != cal.block_size || decode_cal.kv_bytes_per_block != cal.kv_bytes_per_block) {
      return absl::InvalidArgumentError(
          "--decode-calibration's KV layout (block size " + std::to_string(decode_cal.block_size) + ", " +
          std::to_string(static_cast<int64_t>(decode_cal.kv_bytes_per_block)) + " bytes a block) differs from "
          "--calibration's (block size " + std::to_string(cal.block_size) + ", " +
          std::to_string(static_cast<int64_t>(cal.kv_bytes_per_block)) + "): the roles could not ship KV");
    }
  }
  SimConfig c;
  c.prefill_cost = cal.prefill_model;
  c.decode_cost = decode_cal.decode_model;
  c.block_size = cal.block_size;
  c.max_num_batched_tokens = cal.max_num_batched_tokens;
  c.kv_bytes_per_block = cal.kv_bytes_per_block;
  c.prefill_kv_blocks = f.prefill_kv_blocks > 0 ? f.prefill_kv_blocks : cal.kv_blocks;
  c.decode_kv_blocks = f.decode_kv_blocks > 0 ? f.decode_kv_blocks : decode_cal.kv_blocks;
  c.max_num_seqs = static_cast<int>(f.max_num_seqs);
  c.window_tokens_per_worker = f.max_prefill_tokens_per_worker;
  c.shared_cores = static_cast<int>(f.shared_cores);
  c.threads_per_worker = f.threads_per_worker > 0 ? static_cast<int>(f.threads_per_worker) : omp_get_max_threads();
  ASSIGN_OR_RETURN(c.routing.mode, ParseRoutingMode(f.routing));
  if (f.kv_overlap_weight) c.routing.overlap_weight = *f.kv_overlap_weight;
  if (f.transfer_gbps) c.transfer_bytes_per_s = *f.transfer_gbps * 1e9;
  c.concurrency = f.concurrency;
  if (f.sharing_efficiency) c.sharing_efficiency = *f.sharing_efficiency;
  if (!(c.sharing_efficiency > 0 && c.sharing_efficiency <= 1)) {
    return absl::InvalidArgumentError("--sharing-efficiency must be in (0, 1]");
  }
  if (c.prefill_kv_blocks < 1 || c.decode_kv_blocks < 1 || c.max_num_seqs < 1 || c.shared_cores < 0 ||
      !(c.transfer_bytes_per_s > 0)) {
    return absl::InvalidArgumentError("KV pools, --max-num-seqs and --transfer-gbps must be > 0, --shared-cores >= 0");
  }
  return c;
}

Slo SloOf(const Flags& f) {
  Slo s;
  if (f.slo_ttft_ms) s.ttft_ms = *f.slo_ttft_ms;
  if (f.slo_tpot_ms) s.tpot_ms = *f.slo_tpot_ms;
  return s;
}

void PrintSummary(const SimSummary& s, int64_t n) {
  std::cout << std::fixed << std::setprecision(2);
  std::cout << "Completed requests          " << s.completed << " of " << n << "\n"
            << "Output token throughput     " << s.output_tok_s << " tok/s\n"
            << "Goodput                     " << s.goodput << " req/s (" << s.good << " within the SLO, "
            << 100 * s.attainment << "%)\n"
            << "(ms)          mean      p50      p90      p99\n";
  for (const auto& [name, l] : {std::pair{"TTFT", s.ttft_ms}, {"TPOT", s.tpot_ms}, {"E2E ", s.e2e_ms}}) {
    std::cout << name << "    " << std::setw(9) << l.mean << std::setw(9) << l.p50 << std::setw(9) << l.p90
              << std::setw(9) << l.p99 << "\n";
  }
}

void PrintFits(const Calibration& cal, const std::string& out) {
  std::cout << "tandem-sim: " << cal.samples.size() << " step shapes; seconds = " << cal.model.base_s << " + "
            << cal.model.per_token_s << " x tokens + " << cal.model.per_attention_s << " x attention + "
            << cal.model.per_seq_s << " x seqs; median |error| " << 100 * cal.median_abs_rel_error << "%\n"
            << "tandem-sim: prefill chunks: seconds = curve(tokens) + " << cal.prefill_model.per_attention_s
            << " x attention, curve (tokens:seconds)";
  for (const auto& [n, t] : cal.prefill_model.token_curve) std::cout << " " << n << ":" << t;
  std::cout << "; median |error| " << 100 * cal.prefill_median_abs_rel_error << "%\n"
            << "tandem-sim: decode steps alone: seconds = " << cal.decode_model.base_s << " + "
            << cal.decode_model.per_attention_s << " x attention + " << cal.decode_model.per_seq_s
            << " x seqs; median |error| " << 100 * cal.decode_median_abs_rel_error << "%; wrote " << out << "\n";
}

absl::Status Run(const std::string& command, const Flags& f) {
  if (command == "calibrate") {
    if (f.model.empty() || f.out.empty()) return absl::InvalidArgumentError("calibrate needs --model DIR and --out FILE");
    CalibrationOptions o;
    o.model = f.model;
    o.repeats = static_cast<int>(f.repeats);
    if (o.repeats < 1) return absl::InvalidArgumentError("--repeats must be >= 1");
    for (absl::string_view a : absl::StrSplit(f.engine_args, ' ', absl::SkipEmpty())) o.engine_args.emplace_back(a);
    ASSIGN_OR_RETURN(Calibration cal, Calibrate(o));
    nlohmann::json j = cal.ToJson();
    j["model"] = f.model;
    j["engine_args"] = f.engine_args;
    j["threads"] = omp_get_max_threads();
    const char* wait = std::getenv("OMP_WAIT_POLICY");
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    j["omp_wait_policy"] = wait != nullptr ? wait : "";
    j["gomp_spincount"] = spin != nullptr ? spin : "";
    std::ofstream(f.out) << j.dump(2) << "\n";
    PrintFits(cal, f.out);
    return absl::OkStatus();
  }
  if (command == "refit") {
    if (f.calibration.empty() || f.out.empty()) {
      return absl::InvalidArgumentError("refit needs --calibration FILE and --out FILE");
    }
    std::ifstream in(f.calibration);
    if (!in) return absl::NotFoundError("cannot read --calibration " + f.calibration);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return absl::InvalidArgumentError(f.calibration + " is not JSON");
    ASSIGN_OR_RETURN(Calibration cal, Calibration::FromJson(j));
    RETURN_IF_ERROR(Refit(cal));
    const nlohmann::json fits = cal.ToJson();
    for (const char* k : {"cost", "median_abs_rel_error", "prefill_cost", "prefill_median_abs_rel_error",
                          "decode_cost", "decode_median_abs_rel_error"}) {
      j[k] = fits[k];  // everything else (model, flags, OpenMP waiting, samples) as it was
    }
    std::ofstream(f.out) << j.dump(2) << "\n";
    PrintFits(cal, f.out);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(SimConfig cluster, Cluster(f));
  ASSIGN_OR_RETURN(std::vector<SimRequest> reqs, Workload(f));
  if (command == "run") {
    if (f.prefill_workers < 1 || f.decode_workers < 1 || f.prefill_workers > 100000 || f.decode_workers > 100000) {
      return absl::InvalidArgumentError("--prefill-workers and --decode-workers must be in [1, 100000]");
    }
    cluster.num_prefill = static_cast<int>(f.prefill_workers);
    cluster.num_decode = static_cast<int>(f.decode_workers);
    const SimResult r = Simulate(cluster, reqs);
    std::cout << "tandem-sim: " << cluster.num_prefill << "P" << cluster.num_decode << "D, " << reqs.size()
              << " requests, routing " << RoutingModeName(cluster.routing.mode) << "\n";
    const SimSummary s = Summarize(r, SloOf(f));
    PrintSummary(s, static_cast<int64_t>(reqs.size()));
    if (!f.json_out.empty()) {
      auto latency = [](const bench::LatencySummary& l) {
        return nlohmann::json{{"mean", l.mean}, {"p50", l.p50}, {"p90", l.p90}, {"p99", l.p99}};
      };
      const nlohmann::json j = {{"prefill_workers", cluster.num_prefill}, {"decode_workers", cluster.num_decode},
                                {"num_requests", reqs.size()}, {"completed", s.completed},
                                {"ttft_ms", latency(s.ttft_ms)}, {"tpot_ms", latency(s.tpot_ms)},
                                {"e2e_ms", latency(s.e2e_ms)}, {"output_throughput", s.output_tok_s},
                                {"goodput", s.goodput}, {"good_requests", s.good}, {"attainment", s.attainment},
                                {"steps", {{"prefill", {{"count", r.prefill_steps.count},
                                                        {"seconds", r.prefill_steps.seconds}}},
                                           {"decode", {{"count", r.decode_steps.count},
                                                       {"seconds", r.decode_steps.seconds}}}}}};
      std::ofstream(f.json_out) << j.dump(2) << "\n";
    }
    return absl::OkStatus();
  }
  if (command == "plan") {
    if (f.workers < 2 || f.workers > 100000) return absl::InvalidArgumentError("--workers must be in [2, 100000]");
    const Plan plan = PlanSplits(cluster, reqs, static_cast<int>(f.workers), SloOf(f));
    std::cout << std::fixed << std::setprecision(2) << "split    goodput(req/s)  SLO%    TTFT p50  TTFT p99  TPOT p50 (ms)\n";
    for (size_t i = 0; i < plan.rows.size(); ++i) {
      const PlanRow& r = plan.rows[i];
      std::cout << std::setw(3) << r.prefill << "P" << std::setw(3) << r.decode << "D  " << std::setw(12)
                << r.summary.goodput << std::setw(8) << 100 * r.summary.attainment << std::setw(10)
                << r.summary.ttft_ms.p50 << std::setw(10) << r.summary.ttft_ms.p99 << std::setw(10)
                << r.summary.tpot_ms.p50 << (static_cast<int>(i) == plan.best ? "   <- recommended" : "") << "\n";
    }
    if (plan.best >= 0) {
      const PlanRow& b = plan.rows[plan.best];
      std::cout << "tandem-sim: recommended prefill:decode = " << b.prefill << ":" << b.decode << "\n";
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown command '" + command + "' (calibrate, refit, run, plan)");
}

}  // namespace
}  // namespace tandem::sim

int main(int argc, char** argv) {
  tandem::sim::Flags f;
  tandem::cli::FlagSet set;
  f.Register(set);
  std::vector<std::string> args(argv + 1, argv + argc);
  const std::string usage = "usage: tandem-sim calibrate|refit|run|plan [flags]\n" + set.Usage();
  if (args.empty() || args[0] == "--help") {
    std::cout << usage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (absl::Status st = set.Parse(args); !st.ok()) {
    std::cerr << "tandem-sim: " << st.message() << "\n" << usage;
    return 2;
  }
  if (f.help) {
    std::cout << usage;
    return 0;
  }
  // OpenMP reads its environment when the runtime starts, so the waiting of
  // workers that share cores takes a fresh start of this program under it.
  if (command == "calibrate" && f.workers_share_cores && !tandem::process::UserSetOmpWaiting()) {
    for (const char* kv : tandem::process::kSharedCoreOmpEnv) putenv(const_cast<char*>(kv));
    execv("/proc/self/exe", argv);
    std::cerr << "tandem-sim: cannot restart under the shared-core OpenMP environment\n";
    return 1;
  }
  if (absl::Status st = tandem::sim::Run(command, f); !st.ok()) {
    std::cerr << "tandem-sim: " << st.message() << "\n";
    return absl::IsInvalidArgument(st) ? 2 : 1;
  }
  return 0;
}
