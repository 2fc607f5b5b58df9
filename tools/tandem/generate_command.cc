#include "tools/tandem/generate_command.h"

#include <chrono>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/core/static_generator.h"
#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/tandem/cli_flags.h"
#include "tools/tandem/model_path.h"

namespace tandem::cli {
namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  int64_t max_tokens = 16;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, frequency_penalty,
      presence_penalty;
  int64_t top_k = -2;  // -2: take the model's generation_config default
  std::optional<uint64_t> seed;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int64_t logprobs = 0;
  bool json = false;
  bool help = false;
};

void Register(FlagSet& f, GenerateFlags& g) {
  f.AddString("model", &g.model, "HuggingFace model directory (default: the bundled model)");
  f.AddString("prompt", &g.prompt, "prompt text (tokenized with the model's tokenizer)");
  f.AddIntList("prompt-ids", &g.prompt_ids, "prompt as token ids, e.g. 1,2,3 (instead of --prompt)");
  f.AddInt("max-tokens", &g.max_tokens, "tokens to generate at most (default 16)");
  f.AddFloat("temperature", &g.temperature, "0 = greedy (default: generation_config.json)");
  f.AddFloat("top-p", &g.top_p, "nucleus sampling mass in (0, 1]");
  f.AddInt("top-k", &g.top_k, "keep the k most likely tokens (0 or -1: off)");
  f.AddFloat("min-p", &g.min_p, "drop tokens below min_p x the top probability");
  f.AddFloat("repetition-penalty", &g.repetition_penalty, "HF-style repetition penalty (> 0)");
  f.AddFloat("frequency-penalty", &g.frequency_penalty, "OpenAI-style frequency penalty [-2, 2]");
  f.AddFloat("presence-penalty", &g.presence_penalty, "OpenAI-style presence penalty [-2, 2]");
  f.AddUint64("seed", &g.seed, "random seed (same seed, same tokens)");
  f.AddIntList("stop-token-ids", &g.stop_token_ids, "extra token ids that end generation");
  f.AddBool("ignore-eos", &g.ignore_eos, "keep generating past end-of-sequence tokens");
  f.AddInt("logprobs", &g.logprobs, "also report the top-n logprobs of each step (JSON only)");
  f.AddBool("json", &g.json, "print one JSON object instead of text");
  f.AddBool("help", &g.help, "show this help");
}

// Sampling parameters: flags first, then the model's generation_config.json.
absl::StatusOr<SamplingParams> MakeSamplingParams(const GenerateFlags& g, const ModelConfig& c) {
  SamplingParams p;
  const auto& d = c.generation;
  p.temperature = g.temperature.value_or(d.do_sample ? static_cast<float>(d.temperature) : 0.0f);
  p.top_p = g.top_p.value_or(static_cast<float>(d.top_p));
  p.top_k = g.top_k == -2 ? d.top_k : static_cast<int32_t>(g.top_k);
  p.min_p = g.min_p.value_or(0.0f);
  p.repetition_penalty = g.repetition_penalty.value_or(static_cast<float>(d.repetition_penalty));
  p.frequency_penalty = g.frequency_penalty.value_or(0.0f);
  p.presence_penalty = g.presence_penalty.value_or(0.0f);
  p.seed = g.seed;
  if (g.max_tokens < 1 || g.max_tokens > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-tokens ", g.max_tokens, ": must be >= 1"));
  }
  p.max_tokens = static_cast<uint32_t>(g.max_tokens);
  p.stop_token_ids = g.stop_token_ids;
  p.ignore_eos = g.ignore_eos;
  if (g.logprobs < 0 || g.logprobs > 20) {
    return absl::InvalidArgumentError("--logprobs must be in [0, 20]");
  }
  p.logprobs = static_cast<uint32_t>(g.logprobs);
  RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::Status Generate(const GenerateFlags& g) {
  const std::filesystem::path dir = g.model.empty() ? DefaultModelDir() : std::filesystem::path(g.model);
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir));
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(dir));
  }

  GenerationRequest request;
  if (!g.prompt_ids.empty()) {
    if (!g.prompt.empty()) return absl::InvalidArgumentError("give --prompt or --prompt-ids, not both");
    request.prompt_token_ids = g.prompt_ids;
  } else {
    if (g.prompt.empty()) return absl::InvalidArgumentError("--prompt or --prompt-ids is required");
    if (!tokenizer) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir.string(), " has no tokenizer.json: use --prompt-ids"));
    }
    request.prompt_token_ids = tokenizer->Encode(g.prompt);
  }
  ASSIGN_OR_RETURN(request.sampling, MakeSamplingParams(g, model->config()));
  const uint64_t fallback_seed = std::random_device{}();
  ASSIGN_OR_RETURN(std::vector<GenerationResult> results,
                   GenerateStatic(*model, std::span(&request, 1), {.fallback_seed = fallback_seed}));
  const GenerationResult& r = results[0];
  const std::string text = tokenizer ? tokenizer->Decode(r.token_ids) : "";

  if (!g.json) {
    std::cout << (tokenizer ? tokenizer->Decode(request.prompt_token_ids) : "") << text << "\n";
    return absl::OkStatus();
  }
  nlohmann::json out;
  out["prompt_token_ids"] = request.prompt_token_ids;
  out["token_ids"] = r.token_ids;
  out["text"] = text;
  out["finish_reason"] = FinishReasonName(r.finish_reason);
  if (request.sampling.logprobs > 0) {
    nlohmann::json lps = nlohmann::json::array();
    for (const SampledToken& t : r.samples) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& [id, lp] : t.top_logprobs) top.push_back({{"token_id", id}, {"logprob", lp}});
      lps.push_back({{"token_id", t.token_id}, {"logprob", t.logprob}, {"top_logprobs", top}});
    }
    out["logprobs"] = lps;
  }
  // Invalid UTF-8 never reaches here (Decode replaces it), so dump cannot throw.
  std::cout << out.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  FlagSet flags;
  GenerateFlags g;
  Register(flags, g);
  if (absl::Status st = flags.Parse(args); !st.ok()) {
    std::cerr << "tandem generate: " << st.message() << "\nflags:\n" << flags.Usage();
    return 2;
  }
  if (g.help) {
    std::cout << "usage: tandem generate [--model DIR] (--prompt TEXT | --prompt-ids 1,2,3) [flags]\n"
              << flags.Usage();
    return 0;
  }
  if (absl::Status st = Generate(g); !st.ok()) {
    std::cerr << "tandem generate: " << st << "\n";
    return 1;
  }
  return 0;
}

}  // namespace tandem::cli
