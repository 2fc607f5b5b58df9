#include "tools/tandem/perplexity_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli/cli_flags.h"
#include "common/cli/flag_files.h"
#include "common/cli/model_path.h"
#include "engine/model/auto_dtype.h"
#include "engine/model/llama_model.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/engine_flags.h"

namespace tandem::cli {

int RunPerplexity(const std::vector<std::string>& args) {
  FlagSet flags;
  std::string model, text_file, dtype = "float32", kv_cache_dtype = "fp32", token_ids_out;
  int64_t context = 0, max_tokens = 0, step_tokens = 256;
  std::string quantization = "none";
  bool json = false, help = false, quantize_lm_head = false;
  flags.AddString("model", &model, "HuggingFace model directory with its tokenizer (default: the bundled model)");
  flags.AddString("text", &text_file, "the text to score (UTF-8), tokenized whole once");
  flags.AddInt("context", &context,
               "tokens per window, each run from an empty cache (default 512, or the model's "
               "max_position_embeddings when smaller)");
  flags.AddInt("max-tokens", &max_tokens, "score only the first N tokens of the text (default 0: all)");
  flags.AddInt("step-tokens", &step_tokens, "tokens per forward step inside a window (default 256; memory only)");
  flags.AddString("dtype", &dtype, "auto | float32 | bfloat16: matmul arithmetic, as tandem generate (default float32)");
  flags.AddString("kv-cache-dtype", &kv_cache_dtype, "auto | fp32 | bf16 | fp16 | int8 | fp8 (default fp32)");
  flags.AddString("quantization", &quantization, "none | int8 | fp8 | int4: quantize at load, as tandem generate (default none)");
  flags.AddBool("quantize-lm-head", &quantize_lm_head,
                "with --quantization: quantize the LM head too (tandem generate keeps it in the file's dtype)");
  flags.AddString("token-ids-out", &token_ids_out,
                  "also write the scored token ids there (a JSON array), to score them with another tool");
  flags.AddBool("json", &json, "print one JSON object");
  flags.AddBool("help", &help, "show this help");
  const absl::Status parsed = flags.Parse(args);
  std::string why = parsed.ok() ? "" : std::string(parsed.message());
  if (parsed.ok() && !help) {
    if (text_file.empty()) why = "--text is required";
    if (context == 1 || context < 0) why = absl::StrCat("--context ", context, ": must be at least 2 (0: the default)");
    if (max_tokens < 0) why = "--max-tokens must be >= 0";
    if (step_tokens < 1 || step_tokens > 65536) why = "--step-tokens must be in [1, 65536]";
  }
  const bool usage_error = !why.empty();
  if (usage_error || help) {
    (usage_error ? std::cerr : std::cout)
        << (why.empty() ? "" : why + "\n")
        << "usage: tandem perplexity --text FILE [--model DIR] [--context N (>= 2)] [--max-tokens N] "
           "[--dtype D] [--kv-cache-dtype D] [--quantization Q [--quantize-lm-head]] [--json]\n"
           "tokenizes FILE once (BOS at the start when the tokenizer adds one), keeps the first --max-tokens, "
           "cuts them into windows of --context tokens, runs each from an empty cache and scores every token of "
           "a window but its first\n"
        << flags.Usage();
    return usage_error ? 2 : 0;
  }
  auto fail = [](const absl::Status& st) {
    std::cerr << "tandem perplexity: " << st << "\n";
    return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  };
  const std::filesystem::path dir = model.empty() ? DefaultModelDir() : std::filesystem::path(model);
  // "auto" as the engine flags resolve it; the defaults stay the fp32 reference.
  absl::StatusOr<DType> file_dtype = DType::kF32;
  if (kv_cache_dtype == "auto" || dtype == "auto") file_dtype = CheckpointDtype(dir);
  if (!file_dtype.ok()) return fail(file_dtype.status());
  absl::StatusOr<DType> kv_dtype =
      kv_cache_dtype == "auto" ? AutoKvCacheDtype(*file_dtype) : ParseKvCacheDtype(kv_cache_dtype);
  if (!kv_dtype.ok()) return fail(kv_dtype.status());
  absl::StatusOr<kernels::MatMulPrecision> precision =
      dtype == "auto" ? AutoMatMulPrecision(*file_dtype, kernels::Bf16MatMulIsFast()) : ParseMatMulDtype(dtype);
  if (!precision.ok()) return fail(precision.status());
  absl::StatusOr<Quantization> scheme = ParseQuantization(quantization);
  if (!scheme.ok()) return fail(scheme.status());
  if (quantize_lm_head && *scheme == Quantization::kNone) {
    return fail(absl::InvalidArgumentError("--quantize-lm-head needs --quantization"));
  }
  absl::StatusOr<std::string> text = ReadFlagFile("text", text_file);
  if (!text.ok()) return fail(text.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  absl::StatusOr<std::vector<int32_t>> tokens = (*tokenizer)->TryEncode(*text, /*add_special_tokens=*/true);
  if (!tokens.ok()) return fail(tokens.status());
  if (max_tokens > 0 && static_cast<int64_t>(tokens->size()) > max_tokens) tokens->resize(max_tokens);
  if (!token_ids_out.empty()) {
    std::ofstream out(token_ids_out);
    out << nlohmann::json(*tokens).dump() << "\n";
    if (!out) return fail(absl::InvalidArgumentError(absl::StrCat("--token-ids-out: cannot write ", token_ids_out)));
  }
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(dir, {}, nullptr, *precision,
                                                                 QuantizationConfig{*scheme, quantize_lm_head});
  if (!m.ok()) return fail(m.status());
  if (context == 0) context = std::min<int64_t>(512, (*m)->config().max_position_embeddings);
  if (*kv_dtype == DType::kF8E4M3) std::cerr << KvCacheScalesNote((*m)->kv_cache_scales().from_checkpoint) << "\n";
  PerplexityOptions options;
  options.context = context;
  options.step_tokens = step_tokens;
  options.kv_dtype = *kv_dtype;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<PerplexityResult> r = ComputePerplexity(**m, *tokens, options);
  if (!r.ok()) return fail(r.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (json) {
    nlohmann::json j = {{"perplexity", r->perplexity}, {"mean_nll", r->mean_nll},
                        {"scored_tokens", r->scored_tokens}, {"windows", r->windows},
                        {"tokens", tokens->size()}, {"context", context},
                        {"dtype", MatMulPrecisionName(*precision)}, {"kv_cache_dtype", KvCacheDtypeName(*kv_dtype)},
                        {"quantization", quantization}, {"quantize_lm_head", quantize_lm_head}, {"seconds", seconds}};
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << absl::StrFormat("perplexity %.6f  (mean NLL %.6f nats over %d scored tokens, %d windows of up to %d; "
                                 "%.1f s, %.0f tok/s)\n",
                                 r->perplexity, r->mean_nll, r->scored_tokens, r->windows, context, seconds,
                                 static_cast<double>(tokens->size()) / std::max(seconds, 1e-9));
  }
  return 0;
}

}  // namespace tandem::cli
