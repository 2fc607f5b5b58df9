#include "tools/tandem/quantize_command.h"

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli/cli_flags.h"
#include "common/cli/flag_files.h"
#include "common/cli/model_path.h"
#include "engine/model/checkpoint_quantization.h"
#include "engine/model/llama_model.h"
#include "engine/model/perplexity.h"
#include "engine/model/safetensors.h"
#include "engine/model/safetensors_writer.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/tandem/awq.h"
#include "tools/tandem/kv_scale_calibration.h"
#include "tools/tandem/smoothquant.h"

namespace tandem::cli {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> ReadJson(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", e.what()));
  }
}

// The output directory: new or empty (a quantized checkpoint never
// overwrites another model's files).
absl::Status PrepareOutDir(const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--out ", out.string(), " exists and is not empty"));
  }
  fs::create_directories(out, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--out ", out.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// Copies the model directory's other files (tokenizer, generation config,
// README, ...): everything but the weights and config.json.
absl::Status CopySideFiles(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(from, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name == "config.json" || name == "model.safetensors.index.json" ||
        e.path().extension() == ".safetensors") {
      continue;
    }
    fs::copy_file(e.path(), to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot copy ", e.path().string(), ": ", ec.message()));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", from.string(), ": ", ec.message()));
  return absl::OkStatus();
}

struct Options {
  std::string model, calibration, scheme = "w8a8-smoothquant", out, stats_out, sample_out;
  double alpha = 0.5;
  int64_t max_tokens = 16384, context = 0, group_size = 0, sample_rows = 512;
  bool json = false, clip = false, kv_cache_scales = false;
  std::string kv_stats_out;
};

int Fail(const absl::Status& st) {
  std::cerr << "tandem quantize: " << st << "\n";
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int RunQuantize(const std::vector<std::string>& args) {
  FlagSet flags;
  Options o;
  bool help = false;
  std::string alpha_text = "0.5";
  flags.AddString("model", &o.model, "float HuggingFace model directory (default: the bundled model)");
  flags.AddString("calibration", &o.calibration, "calibration text (UTF-8), e.g. a slice of the training data");
  flags.AddString("scheme", &o.scheme,
                  "w8a8-smoothquant (smoothed, int8 weights and per-token activations) | w8a8 (the same, "
                  "unsmoothed: round to nearest) | w4a16 (activation-aware int4 weights, groups with zero "
                  "points; AWQ's scale search) (default w8a8-smoothquant)");
  flags.AddInt("group-size", &o.group_size,
               "w4a16: columns per int4 group, 32|64|128 (default 128, or the largest of 64/32 dividing every "
               "linear input width)");
  flags.AddBool("kv-cache-scales", &o.kv_cache_scales,
                "also calibrate the fp8 KV cache: per-layer, per-KV-head k_scale/v_scale = max|K|, max|V| / 448 "
                "over the calibration text (used by --kv-cache-dtype fp8)");
  flags.AddString("kv-stats-out", &o.kv_stats_out, "with --kv-cache-scales: write the |K|, |V| maxima there (JSON)");
  flags.AddBool("clip", &o.clip,
                "w4a16: also search AWQ's per-group clipping after the scales (default off: no gain on the "
                "bundled model)");
  flags.AddInt("sample-rows", &o.sample_rows, "w4a16: token rows kept per layer input for the search (default 512)");
  flags.AddString("sample-out", &o.sample_out,
                  "w4a16: also write the search's activation samples and mean |x| there (safetensors)");
  flags.AddString("alpha", &alpha_text, "SmoothQuant migration strength in [0, 1] (default 0.5)");
  flags.AddString("out", &o.out, "directory for the quantized checkpoint (new or empty)");
  flags.AddInt("max-tokens", &o.max_tokens, "calibration tokens, from the start of the text (default 16384)");
  flags.AddInt("context", &o.context,
               "tokens per calibration window (default 512, or max_position_embeddings when smaller)");
  flags.AddString("stats-out", &o.stats_out,
                  "also write the per-channel activation maxima (w4a16: the scale searches) there (JSON)");
  flags.AddBool("json", &o.json, "print one JSON object");
  flags.AddBool("help", &help, "show this help");
  const absl::Status parsed = flags.Parse(args);
  std::string why = parsed.ok() ? "" : std::string(parsed.message());
  if (parsed.ok() && !help) {
    char* end = nullptr;
    o.alpha = std::strtod(alpha_text.c_str(), &end);
    if (end == alpha_text.c_str() || *end != '\0' || !(o.alpha >= 0.0 && o.alpha <= 1.0)) {
      why = absl::StrCat("--alpha '", alpha_text, "': must be a number in [0, 1]");
    }
    if (o.scheme != "w8a8-smoothquant" && o.scheme != "w8a8" && o.scheme != "w4a16") {
      why = absl::StrCat("--scheme '", o.scheme, "': must be w8a8-smoothquant, w8a8 or w4a16");
    }
    if (o.scheme != "w4a16" && (o.group_size != 0 || !o.sample_out.empty() || o.clip)) {
      why = absl::StrCat(o.group_size != 0 ? "--group-size" : o.clip ? "--clip" : "--sample-out",
                         " applies to --scheme w4a16 only");
    }
    if (o.sample_rows < 1) why = "--sample-rows must be at least 1";
    if (o.out.empty()) why = "--out is required";
    if (o.calibration.empty() && (o.scheme != "w8a8" || o.kv_cache_scales)) why = "--calibration is required";
    if (!o.kv_stats_out.empty() && !o.kv_cache_scales) why = "--kv-stats-out needs --kv-cache-scales";
    if (o.max_tokens < 2) why = "--max-tokens must be at least 2";
    if (o.context == 1 || o.context < 0) why = "--context must be at least 2 (0: the default)";
  }
  if (!why.empty() || help) {
    (why.empty() ? std::cout : std::cerr)
        << (why.empty() ? "" : why + "\n")
        << "usage: tandem quantize --calibration FILE --out DIR [--model DIR] "
           "[--scheme w8a8-smoothquant|w8a8|w4a16] [--alpha A] [--group-size G] [--max-tokens N] "
           "[--kv-cache-scales] [--stats-out FILE] [--json]\n"
           "runs the float model over the calibration text recording each linear layer's per-channel input "
           "maxima, folds SmoothQuant's per-channel factors into the RMSNorm weights, quantizes every decoder "
           "linear layer to int8 per output row and writes a compressed-tensors W8A8 checkpoint (loaded by "
           "Tandem and vLLM); w4a16 instead searches AWQ's per-channel scales on a sample of each layer's inputs "
           "and writes compressed-tensors pack-quantized int4 weights with zero points\n"
        << flags.Usage();
    return why.empty() ? 0 : 2;
  }
  const fs::path dir = o.model.empty() ? DefaultModelDir() : fs::path(o.model);
  const fs::path out(o.out);
  const auto start = std::chrono::steady_clock::now();

  absl::StatusOr<CheckpointQuantization> stored = LoadCheckpointQuantization(dir);
  if (!stored.ok()) return Fail(stored.status());
  if (stored->quantized()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(dir.string(), " is already quantized (", stored->Describe(), "): quantize a float checkpoint")));
  }
  absl::StatusOr<nlohmann::json> config_json = ReadJson(dir / "config.json");
  if (!config_json.ok()) return Fail(config_json.status());
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(dir);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig config = (*model)->config();  // a copy: the model is freed before the weights are written

  const bool w4a16 = o.scheme == "w4a16";
  AwqOptions awq;
  if (w4a16) {
    absl::StatusOr<int64_t> g = W4A16GroupSize(config, o.group_size);
    if (!g.ok()) return Fail(g.status());
    awq.group_size = *g;
    awq.clip = o.clip;
  }

  // Calibration: the float model over the text, observing every layer input.
  ActivationMaxima maxima(config);
  std::unique_ptr<ActivationSampler> sampler;
  PerplexityResult calibration;
  int64_t calibration_tokens = 0;
  KvMaxima kv_maxima(config);
  if (o.scheme != "w8a8" || o.kv_cache_scales) {
    absl::StatusOr<std::string> text = ReadFlagFile("calibration", o.calibration);
    if (!text.ok()) return Fail(text.status());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(dir);
    if (!tokenizer.ok()) return Fail(tokenizer.status());
    absl::StatusOr<std::vector<int32_t>> tokens = (*tokenizer)->TryEncode(*text, /*add_special_tokens=*/true);
    if (!tokens.ok()) return Fail(tokens.status());
    if (static_cast<int64_t>(tokens->size()) > o.max_tokens) tokens->resize(o.max_tokens);
    PerplexityOptions popt;
    popt.context = o.context > 0 ? o.context : std::min<int64_t>(512, config.max_position_embeddings);
    if (w4a16) sampler = std::make_unique<ActivationSampler>(config, tokens->size(), o.sample_rows);
    ObserverPair both(w4a16 ? static_cast<ActivationObserver*>(sampler.get()) : &maxima, &kv_maxima);
    (*model)->SetActivationObserver(&both);
    absl::StatusOr<PerplexityResult> r = ComputePerplexity(**model, *tokens, popt);
    (*model)->SetActivationObserver(nullptr);
    if (!r.ok()) return Fail(r.status());
    calibration = *r;
    calibration_tokens = w4a16 ? sampler->tokens_seen() : maxima.tokens_seen();
    if (!o.stats_out.empty() && !w4a16) {
      std::ofstream stats(o.stats_out);
      stats << maxima.ToJson().dump() << "\n";
      if (!stats) return Fail(absl::InvalidArgumentError(absl::StrCat("--stats-out: cannot write ", o.stats_out)));
    }
  }
  model->reset();  // the weights are read again from the files below

  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir);
  if (!store.ok()) return Fail(store.status());
  const bool smooth = o.scheme == "w8a8-smoothquant";
  std::vector<LayerAwq> searches;
  absl::StatusOr<std::vector<TensorToWrite>> tensors =
      w4a16 ? BuildW4A16Checkpoint(config, **store, *sampler, awq, &searches)
            : BuildW8A8Checkpoint(config, **store, smooth ? &maxima.layers() : nullptr, o.alpha, nullptr);
  if (!tensors.ok()) return Fail(tensors.status());
  if (o.kv_cache_scales) {
    for (TensorToWrite& t : KvScaleTensors(kv_maxima)) tensors->push_back(std::move(t));
    if (!o.kv_stats_out.empty()) {
      std::ofstream kv(o.kv_stats_out);
      kv << kv_maxima.ToJson().dump() << "\n";
      if (!kv) return Fail(absl::InvalidArgumentError(absl::StrCat("--kv-stats-out: cannot write ", o.kv_stats_out)));
    }
  }
  if (w4a16 && !o.stats_out.empty()) {
    std::ofstream stats(o.stats_out);
    stats << AwqStatsJson(searches, awq, *sampler).dump() << "\n";
    if (!stats) return Fail(absl::InvalidArgumentError(absl::StrCat("--stats-out: cannot write ", o.stats_out)));
  }
  if (w4a16 && !o.sample_out.empty()) {
    if (absl::Status s = WriteAwqSamples(o.sample_out, *sampler); !s.ok()) return Fail(s);
  }
  if (absl::Status s = PrepareOutDir(out); !s.ok()) return Fail(s);
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"tandem_quantize", w4a16 ? absl::StrFormat("scheme=w4a16 group_size=%d calibration_tokens=%d",
                                                  awq.group_size, calibration_tokens)
                                : absl::StrFormat("scheme=%s alpha=%g calibration_tokens=%d", o.scheme, o.alpha,
                                                  calibration_tokens)}};
  if (absl::Status s = WriteSafetensors(out / "model.safetensors", *tensors, metadata); !s.ok()) return Fail(s);
  nlohmann::json cfg = *config_json;
  cfg["quantization_config"] = w4a16 ? W4A16QuantizationConfig(awq.group_size) : W8A8QuantizationConfig();
  if (o.kv_cache_scales) cfg["quantization_config"]["kv_cache_scheme"] = KvCacheScheme();
  {
    std::ofstream cf(out / "config.json");
    cf << cfg.dump(2) << "\n";
    if (!cf) return Fail(absl::InternalError(absl::StrCat("cannot write ", (out / "config.json").string())));
  }
  if (absl::Status s = CopySideFiles(dir, out); !s.ok()) return Fail(s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.json) {
    nlohmann::json j = {{"out", out.string()},
                        {"scheme", o.scheme},
                        {"alpha", o.alpha},
                        {"calibration_tokens", calibration_tokens},
                        {"calibration_perplexity", calibration.perplexity},
                        {"seconds", seconds}};
    if (w4a16) {
      j.erase("alpha");
      j["group_size"] = awq.group_size;
      j["clip"] = awq.clip;
    }
    std::cout << j.dump() << std::endl;
  } else {
    const std::string how = w4a16 ? absl::StrFormat("groups of %d", awq.group_size)
                                   : absl::StrFormat("alpha %g", o.alpha);
    std::cout << absl::StrFormat("wrote %s (%s, %s, %d calibration tokens; %.1f s)\n", out.string(), o.scheme, how,
                                 calibration_tokens, seconds);
  }
  return 0;
}

}  // namespace tandem::cli
