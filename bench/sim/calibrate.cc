#include "bench/sim/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/cli/cli_flags.h"
#include "common/status_macros.h"
#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "worker/engine_flags.h"

namespace tandem::sim {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(3, static_cast<int32_t>(std::min<int64_t>(vocab, 30000)) - 1);
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int32_t& t : p) t = d(rng);
  return p;
}

absl::StatusOr<double> TimedStep(LlmEngine& engine) {
  const auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(engine.Step().status());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

absl::StatusOr<Calibration> Calibrate(const CalibrationOptions& options) {
  cli::EngineFlags flags;
  cli::FlagSet set;
  flags.Register(set);
  RETURN_IF_ERROR(set.Parse(options.engine_args));
  ASSIGN_OR_RETURN(EngineConfig config, flags.ToConfig(1, options.model));
  config.enable_prefix_caching = false;  // every step computes all of its shape
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> executor,
                   LoadExecutor(options.model, 1, config.precision, config.quantization));
  const ModelConfig model = executor->config();
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(executor), config));
  RETURN_IF_ERROR(engine->WarmUp());

  Calibration cal;
  cal.block_size = config.block_size;
  cal.kv_blocks = engine->Stats().kv.num_blocks;
  cal.max_num_batched_tokens = config.scheduler.max_num_batched_tokens;
  cal.max_position = static_cast<int>(model.max_position_embeddings);
  const double dtype_bytes = config.kv_dtype == DType::kF32 ? 4 : config.kv_dtype == DType::kI8 || config.kv_dtype == DType::kF8E4M3 ? 1 : 2;
  cal.kv_bytes_per_block = static_cast<double>(model.num_hidden_layers) * 2 * model.num_key_value_heads *
                           model.head_dim * dtype_bytes * config.block_size;
  std::mt19937_64 rng(7);
  const int64_t budget = cal.max_num_batched_tokens;
  SamplingParams params;
  params.temperature = 0;
  params.ignore_eos = true;
  int64_t next_id = 0;
  auto add = [&](int64_t prompt_len, uint32_t max_tokens) -> absl::Status {
    EngineRequest r;
    r.request_id = absl::StrCat("cal-", next_id++);
    r.prompt_token_ids = RandomPrompt(rng, prompt_len, model.vocab_size);
    r.sampling = params;
    r.sampling.max_tokens = max_tokens;
    return engine->AddRequest(std::move(r));
  };
  auto drain = [&]() -> absl::Status {
    for (int guard = 0; engine->HasUnfinishedRequests() && guard < 100000; ++guard) RETURN_IF_ERROR(engine->Step().status());
    return absl::OkStatus();
  };

  // Prefill: one prompt alone, chunked by the budget; every chunk is a
  // sample. Decode: B sequences of prompt C; once every one has its first
  // token (the early ones decode while the later ones prefill), each step
  // decodes one token for each of the B, at its own context.
  std::vector<int64_t> lens;
  for (int64_t len : {16, 48, 96, 160, 256, 512, 1024}) {
    if (len + 2 <= cal.max_position) lens.push_back(len);
  }
  constexpr int kDecodeSteps = 3;
  struct DecodeShape {
    int64_t batch, ctx, max_tokens;
  };
  std::vector<DecodeShape> decodes;
  for (int64_t batch : {1, 4, 8, 16, 32}) {
    for (int64_t ctx : {64, 448}) {
      const int64_t max_tokens = std::min<int64_t>(256, cal.max_position - ctx - 1);
      if (max_tokens >= 2 * kDecodeSteps + batch * ctx / budget + 4) decodes.push_back({batch, ctx, max_tokens});
    }
  }
  // Each repeat is one pass over every shape, so each shape's median spans
  // the whole calibration: on a shared host the speed drifts over minutes,
  // and shapes timed back to back would each catch one moment of it (in one
  // Zen 3 calibration the 256-token chunks, timed last, cost 1.94x the
  // 160-token ones; in another 1.59x, about their ratio of tokens).
  std::vector<std::vector<std::vector<double>>> prefill_times(lens.size());    // [len][chunk][repeat]
  std::vector<std::vector<std::vector<double>>> decode_times(decodes.size());  // [shape][step][repeat]
  std::vector<std::vector<StepShape>> decode_shapes(decodes.size(), std::vector<StepShape>(kDecodeSteps));
  for (int rep = 0; rep < options.repeats; ++rep) {
    for (size_t i = 0; i < lens.size(); ++i) {
      RETURN_IF_ERROR(add(lens[i], 1));
      for (int64_t done = 0, k = 0; done < lens[i]; done += std::min(budget, lens[i] - done), ++k) {
        ASSIGN_OR_RETURN(double t, TimedStep(*engine));
        if (static_cast<int64_t>(prefill_times[i].size()) <= k) prefill_times[i].emplace_back();
        prefill_times[i][k].push_back(t);
      }
      RETURN_IF_ERROR(drain());
    }
    for (size_t j = 0; j < decodes.size(); ++j) {
      const DecodeShape& d = decodes[j];
      decode_times[j].resize(kDecodeSteps);
      absl::flat_hash_map<std::string, int64_t> generated;
      std::vector<std::string> ids;
      for (int64_t b = 0; b < d.batch; ++b) {
        ids.push_back(absl::StrCat("cal-", next_id));
        RETURN_IF_ERROR(add(d.ctx, static_cast<uint32_t>(d.max_tokens)));
      }
      auto count = [&generated](const std::vector<RequestOutput>& outs) {
        for (const RequestOutput& o : outs) generated[o.request_id] += static_cast<int64_t>(o.new_token_ids.size());
      };
      for (int guard = 0; static_cast<int64_t>(generated.size()) < d.batch && guard < 100000; ++guard) {
        ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine->Step());
        count(outs);
      }
      for (int k = 0; k < kDecodeSteps; ++k) {
        StepShape s;
        for (const std::string& id : ids) s += StepShape::Of(1, static_cast<double>(d.ctx + generated[id] - 1));
        const auto t0 = std::chrono::steady_clock::now();
        ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine->Step());
        decode_times[j][k].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        count(outs);
        if (rep == 0) decode_shapes[j][k] = s;  // the same each repeat (the engine is deterministic in its schedule)
      }
      for (const std::string& id : ids) engine->Abort(id);
      RETURN_IF_ERROR(drain());
    }
  }
  for (size_t i = 0; i < lens.size(); ++i) {
    for (int64_t done = 0, k = 0; done < lens[i]; ++k) {
      const int64_t n = std::min(budget, lens[i] - done);
      cal.samples.emplace_back(StepShape::Of(static_cast<double>(n), static_cast<double>(done)),
                               Median(prefill_times[i][k]));
      done += n;
    }
  }
  for (size_t j = 0; j < decodes.size(); ++j) {
    for (int k = 0; k < kDecodeSteps; ++k) cal.samples.emplace_back(decode_shapes[j][k], Median(decode_times[j][k]));
  }
  RETURN_IF_ERROR(Refit(cal));
  return cal;
}

absl::Status Refit(Calibration& cal) {
  ASSIGN_OR_RETURN(cal.model, StepCostModel::Fit(cal.samples));
  ASSIGN_OR_RETURN(cal.prefill_model, StepCostModel::FitPrefill(cal.samples, cal.model.per_seq_s));
  ASSIGN_OR_RETURN(cal.decode_model, StepCostModel::FitDecode(cal.samples));
  std::vector<double> errors, prefill_errors, decode_errors;
  for (const auto& [s, t] : cal.samples) {
    errors.push_back(std::abs(cal.model.Seconds(s) - t) / t);
    if (s.seqs == 1) prefill_errors.push_back(std::abs(cal.prefill_model.Seconds(s) - t) / t);
    if (s.new_tokens == s.seqs) decode_errors.push_back(std::abs(cal.decode_model.Seconds(s) - t) / t);
  }
  cal.median_abs_rel_error = Median(errors);
  cal.prefill_median_abs_rel_error = Median(prefill_errors);
  cal.decode_median_abs_rel_error = Median(decode_errors);
  return absl::OkStatus();
}

nlohmann::json Calibration::ToJson() const {
  nlohmann::json samples_json = nlohmann::json::array();
  for (const auto& [s, t] : samples) {
    samples_json.push_back({{"new_tokens", s.new_tokens}, {"attention", s.attention}, {"seqs", s.seqs}, {"seconds", t}});
  }
  return {{"cost", model.ToJson()},
          {"median_abs_rel_error", median_abs_rel_error},
          {"prefill_cost", prefill_model.ToJson()},
          {"prefill_median_abs_rel_error", prefill_median_abs_rel_error},
          {"decode_cost", decode_model.ToJson()},
          {"decode_median_abs_rel_error", decode_median_abs_rel_error},
          {"block_size", block_size},
          {"kv_blocks", kv_blocks},
          {"kv_bytes_per_block", kv_bytes_per_block},
          {"max_num_batched_tokens", max_num_batched_tokens},
          {"max_position", max_position},
          {"samples", samples_json}};
}

absl::StatusOr<Calibration> Calibration::FromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("cost")) return absl::InvalidArgumentError("calibration: no 'cost' object");
  Calibration c;
  ASSIGN_OR_RETURN(c.model, StepCostModel::FromJson(j["cost"]));
  c.prefill_model = c.decode_model = c.model;
  if (j.contains("prefill_cost")) {
    ASSIGN_OR_RETURN(c.prefill_model, StepCostModel::FromJson(j["prefill_cost"]));
  }
  if (j.contains("decode_cost")) {
    ASSIGN_OR_RETURN(c.decode_model, StepCostModel::FromJson(j["decode_cost"]));
  }
  auto number = [&j](const char* name, auto* out) -> absl::Status {
    if (!j.contains(name) || !j[name].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("calibration: '", name, "' missing or not a number"));
    }
    *out = j[name].get<std::remove_pointer_t<decltype(out)>>();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(number("block_size", &c.block_size));
  RETURN_IF_ERROR(number("kv_blocks", &c.kv_blocks));
  RETURN_IF_ERROR(number("kv_bytes_per_block", &c.kv_bytes_per_block));
  RETURN_IF_ERROR(number("max_num_batched_tokens", &c.max_num_batched_tokens));
  RETURN_IF_ERROR(number("max_position", &c.max_position));
  if (j.contains("samples")) {
    if (!j["samples"].is_array()) return absl::InvalidArgumentError("calibration: 'samples' is not an array");
    for (const nlohmann::json& s : j["samples"]) {
      for (const char* k : {"new_tokens", "attention", "seqs", "seconds"}) {
        if (!s.is_object() || !s.contains(k) || !s[k].is_number()) {
          return absl::InvalidArgumentError(absl::StrCat("calibration: a sample's '", k, "' missing or not a number"));
        }
      }
      const double t = s["seconds"].get<double>();
      if (!(t > 0)) return absl::InvalidArgumentError("calibration: a sample's 'seconds' must be > 0");
      const StepShape shape{s["new_tokens"].get<double>(), s["attention"].get<double>(), s["seqs"].get<double>()};
      // A step computes at least a token for each of its sequences.
      if (!(shape.seqs >= 1 && shape.new_tokens >= shape.seqs && shape.attention >= shape.new_tokens)) {
        return absl::InvalidArgumentError(
            "calibration: a sample needs seqs >= 1, new_tokens >= seqs and attention >= new_tokens");
      }
      c.samples.emplace_back(shape, t);
    }
  }
  if (c.block_size < 1 || c.kv_blocks < 1 || c.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError("calibration: block_size, kv_blocks and max_num_batched_tokens must be >= 1");
  }
  return c;
}

}  // namespace tandem::sim
