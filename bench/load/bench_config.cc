#include "bench/load/bench_config.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "common/cli/cli_flags.h"

namespace tandem::bench {
namespace {

std::string FormatRate(double rate) {
  return std::isinf(rate) ? "inf" : absl::StrCat(rate);
}

}  // namespace

absl::StatusOr<SweepSpec> ParseSweep(const std::string& text) {
  const size_t eq = text.find('=');
  const std::string kind = eq == std::string::npos ? "" : text.substr(0, eq);
  SweepSpec spec;
  if (kind == "rates" || kind == "rate") {
    spec.kind = SweepKind::kRate;
  } else if (kind == "concurrency") {
    spec.kind = SweepKind::kConcurrency;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--sweep: '", text, "' is not rates=R1,R2,... or concurrency=C1,C2,..."));
  }
  for (absl::string_view part : absl::StrSplit(text.substr(eq + 1), ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    double v;
    if (!absl::SimpleAtod(part, &v) || !(v > 0) ||
        (spec.kind == SweepKind::kConcurrency && (std::isinf(v) || v != std::floor(v)))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--sweep: '", part, "' is not ", spec.kind == SweepKind::kRate ? "a rate > 0 (or inf)" : "an integer >= 1"));
    }
    spec.values.push_back(v);
  }
  if (spec.values.empty()) return absl::InvalidArgumentError("--sweep: no values");
  return spec;
}

absl::Status BenchConfig::Validate() const {
  if (backend == Backend::kOpenAi) {
    if (!base_url.starts_with("http://") && !base_url.starts_with("https://")) {
      return absl::InvalidArgumentError(
          "--backend openai needs --base-url http://HOST:PORT/v1 (got '" + base_url + "')");
    }
  } else if (!base_url.empty() || !model.empty()) {
    return absl::InvalidArgumentError("--base-url and --model are for --backend openai (grpc uses --addr)");
  }
  if (request_rate) RETURN_IF_ERROR((ArrivalConfig{*request_rate, burstiness}.Validate()));
  if (!(burstiness > 0) || std::isinf(burstiness)) {
    return absl::InvalidArgumentError(absl::StrCat("--burstiness must be > 0 and finite, got ", burstiness));
  }
  if (concurrency < 0) return absl::InvalidArgumentError("--concurrency must be >= 0 (0 = no cap)");
  if (num_requests < 1) return absl::InvalidArgumentError("--num-requests must be >= 1");
  if (warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  if (timeout_s < 1) return absl::InvalidArgumentError("--timeout-s must be >= 1");
  if (temperature && !(*temperature >= 0)) return absl::InvalidArgumentError("--temperature must be >= 0");
  if (slo.ttft_ms && !(*slo.ttft_ms > 0)) return absl::InvalidArgumentError("--slo-ttft-ms must be > 0");
  if (slo.tpot_ms && !(*slo.tpot_ms > 0)) return absl::InvalidArgumentError("--slo-tpot-ms must be > 0");
  if (sweep && json_out.empty() && plot_out.empty()) {
    return absl::InvalidArgumentError("--sweep needs --json-out FILE (the plot goes beside it)");
  }
  if (dataset.kind == DatasetKind::kMultiTurn) {
    // The next turn's prompt holds the previous turn's output as token ids,
    // which only the gRPC API returns.
    if (backend != Backend::kGrpc) return absl::InvalidArgumentError("--dataset multi-turn needs --backend grpc");
    if (dataset.num_turns >= 1 && (num_requests % dataset.num_turns != 0 || warmup % dataset.num_turns != 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--dataset multi-turn: --num-requests and --warmup must be "
                                                     "multiples of --num-turns (", dataset.num_turns, ")"));
    }
  }
  return dataset.Validate();
}

std::vector<LoadPoint> BenchConfig::Points() const {
  const double inf = std::numeric_limits<double>::infinity();
  const double base_rate = request_rate.value_or(inf);
  auto point = [&](double rate, int64_t cap) {
    LoadPoint p{"rate=" + FormatRate(rate), {rate, burstiness}, cap};
    if (cap > 0) {
      p.label = std::isinf(rate) ? absl::StrCat("concurrency=", cap)
                                 : absl::StrCat(p.label, ",concurrency=", cap);
    }
    return p;
  };
  std::vector<LoadPoint> points;
  if (!sweep) {
    points.push_back(point(base_rate, concurrency));
  } else if (sweep->kind == SweepKind::kRate) {
    for (double r : sweep->values) points.push_back(point(r, concurrency));
  } else {
    for (double c : sweep->values) points.push_back(point(base_rate, static_cast<int64_t>(c)));
  }
  return points;
}

std::string BenchConfig::PlotPath() const {
  if (!plot_out.empty()) return plot_out;
  std::string stem = json_out;
  if (stem.size() > 5 && stem.ends_with(".json")) stem.resize(stem.size() - 5);
  return stem + ".png";
}

absl::StatusOr<BenchConfig> ParseBenchFlags(const std::vector<std::string>& args, std::string* usage) {
  BenchConfig c;
  cli::FlagSet flags;
  std::optional<float> rate, burstiness, slo_ttft, slo_tpot;
  std::optional<uint64_t> seed;
  int64_t input_len = -1, output_len = -1;
  std::string input_range, output_range, output_choices, dataset = "random", sweep, backend = "grpc";
  flags.AddString("backend", &backend, "grpc (Tandem's Generate, at --addr) | openai (POST {--base-url}/completions)");
  flags.AddString("addr", &c.addr, "Tandem endpoint host:port (default 127.0.0.1:50051)");
  flags.AddString("base-url", &c.base_url, "openai: the API root, e.g. http://127.0.0.1:8080/v1");
  flags.AddString("model", &c.model, "openai: the \"model\" field (default: the first id of GET {base-url}/models)");
  flags.AddFloat("request-rate", &rate, "requests/s, Poisson arrivals; inf = all at once (default inf)");
  flags.AddFloat("burstiness", &burstiness, "Gamma shape of the inter-arrival gaps; 1 = Poisson (default 1)");
  flags.AddInt("concurrency", &c.concurrency, "most requests in flight; alone = closed loop (default 0 = no cap)");
  flags.AddInt("num-requests", &c.num_requests, "measured requests per point (default 100)");
  flags.AddInt("warmup", &c.warmup, "requests run first at each point, excluded from the stats (default 0)");
  flags.AddUint64("seed", &seed, "seed of the dataset and the arrival times (default 0)");
  flags.AddString("dataset", &dataset, "random | sharegpt-like | prefix | multi-turn (default random)");
  flags.AddInt("input-len", &input_len,
               "prompt ids (prefix: suffix ids after the prefix; multi-turn: each turn's new message) (default 128)");
  flags.AddString("input-len-range", &input_range, "A:B: prompt lengths uniform in [A, B] instead of --input-len");
  flags.AddInt("output-len", &output_len, "tokens to generate, sent as max_tokens (default 64)");
  flags.AddString("output-len-range", &output_range, "A:B: output lengths uniform in [A, B] instead of --output-len");
  flags.AddString("output-len-choices", &output_choices,
                  "A,B,...: each request's output length is one of these, equally likely");
  flags.AddInt("prefix-len", &c.dataset.prefix_len,
               "prefix: ids shared by every prompt; multi-turn: by every conversation's first turn (default 0)");
  flags.AddInt("num-prefixes", &c.dataset.num_prefixes,
               "prefix, multi-turn: distinct prefixes of --prefix-len ids; each prompt (conversation) starts with "
               "one, equally likely (default 1)");
  flags.AddInt("num-turns", &c.dataset.num_turns,
               "multi-turn: turns per conversation; each turn's prompt is the conversation so far (earlier "
               "prompts and the server's outputs) and a new message (default 1; multi-turn needs >= 2)");
  flags.AddInt("vocab-size", &c.dataset.vocab_size, "prompt ids are drawn from [3, vocab-size) (default 2000)");
  flags.AddInt("max-model-len", &c.dataset.max_model_len,
               "the server's context length; prompt + output must fit (default 256, the bundled model's)");
  flags.AddBool("ignore-eos", &c.ignore_eos, "set sampling.ignore_eos: every request generates its full length");
  flags.AddFloat("temperature", &c.temperature, "sampling.temperature (default: the model's; openai: 0)");
  flags.AddFloat("slo-ttft-ms", &slo_ttft, "goodput: a good request's TTFT is at most this");
  flags.AddFloat("slo-tpot-ms", &slo_tpot, "goodput: a good request's TPOT is at most this");
  flags.AddInt("timeout-s", &c.timeout_s, "deadline of each request in seconds (default 600)");
  flags.AddString("api-key", &c.api_key, "API key for a server started with --api-key-file (default: $TANDEM_API_KEY)");
  flags.AddString("json-out", &c.json_out, "write the results as JSON to this file");
  flags.AddBool("json-detailed", &c.json_detailed, "also write every request's lengths and latencies");
  flags.AddString("sweep", &sweep, "rates=R1,R2,... or concurrency=C1,C2,...: one run per value, plus a plot");
  flags.AddString("plot-out", &c.plot_out, "sweep: the PNG to write (default: --json-out with .png)");
  flags.AddBool("help", &c.help, "show this help");
  if (usage != nullptr) *usage = flags.Usage();
  RETURN_IF_ERROR(flags.Parse(args));
  if (c.help) return c;
  if (const char* env = std::getenv("TANDEM_API_KEY"); c.api_key.empty() && env != nullptr) c.api_key = env;

  if (backend == "grpc") {
    c.backend = Backend::kGrpc;
  } else if (backend == "openai") {
    c.backend = Backend::kOpenAi;
  } else {
    return absl::InvalidArgumentError("--backend: '" + backend + "' is not grpc or openai");
  }
  while (c.base_url.ends_with('/')) c.base_url.pop_back();
  if (rate) c.request_rate = *rate;
  if (burstiness) c.burstiness = *burstiness;
  if (seed) c.seed = *seed;
  if (slo_ttft) c.slo.ttft_ms = *slo_ttft;
  if (slo_tpot) c.slo.tpot_ms = *slo_tpot;
  ASSIGN_OR_RETURN(c.dataset.kind, ParseDatasetKind(dataset));
  auto length = [](const char* name, int64_t fixed, const std::string& range, int64_t dflt,
                   LengthRange* out) -> absl::Status {
    if (fixed >= 0 && !range.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("give --", name, " or --", name, "-range, not both"));
    }
    if (!range.empty()) {
      auto r = ParseLengthRange(range);
      if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat("--", name, "-range: ", r.status().message()));
      *out = *r;
    } else {
      const int64_t v = fixed >= 0 ? fixed : dflt;
      *out = {v, v};
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(length("input-len", input_len, input_range, 128, &c.dataset.input_len));
  RETURN_IF_ERROR(length("output-len", output_len, output_range, 64, &c.dataset.output_len));
  if (!output_choices.empty()) {
    if (output_len >= 0 || !output_range.empty()) {
      return absl::InvalidArgumentError("give one of --output-len, --output-len-range, --output-len-choices");
    }
    size_t start = 0;
    while (start <= output_choices.size()) {
      const size_t comma = std::min(output_choices.find(',', start), output_choices.size());
      const std::string item = output_choices.substr(start, comma - start);
      start = comma + 1;
      auto v = ParseLengthRange(item);
      if (!v.ok() || v->min != v->max) {
        return absl::InvalidArgumentError(absl::StrCat("--output-len-choices: bad length '", item, "'"));
      }
      c.dataset.output_len_choices.push_back(v->min);
    }
  }
  if (c.dataset.kind == DatasetKind::kShareGptLike &&
      (input_len >= 0 || output_len >= 0 || !input_range.empty() || !output_range.empty() ||
       !output_choices.empty())) {
    return absl::InvalidArgumentError("--dataset sharegpt-like draws its own lengths: drop --input-len/--output-len");
  }
  if (!sweep.empty()) {
    ASSIGN_OR_RETURN(c.sweep, ParseSweep(sweep));
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace tandem::bench
