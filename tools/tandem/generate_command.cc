#include "tools/tandem/generate_command.h"

#include <chrono>
#include <fstream>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/core/llm_engine.h"
#include "engine/core/output_processor.h"
#include "engine/model/llama_model.h"
#include "engine/sampler/sampling_defaults.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "common/cli/cli_flags.h"
#include "worker/engine_flags.h"
#include "common/cli/model_path.h"

namespace tandem::cli {
namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::string prompts_file;
  int64_t num_prompts = 0, input_len = 0, output_len = 0;
  int64_t max_tokens = 16;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, frequency_penalty,
      presence_penalty;
  int64_t top_k = -2;  // -2: take the model's generation_config default
  std::optional<uint64_t> seed;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int64_t logprobs = 0;
  bool json = false;
  bool help = false;
  int64_t tp = 1;
  EngineFlags engine;
};

void Register(FlagSet& f, GenerateFlags& g) {
  f.AddString("model", &g.model, "HuggingFace model directory (default: the bundled model)");
  f.AddString("prompt", &g.prompt, "prompt text (tokenized with the model's tokenizer)");
  f.AddIntList("prompt-ids", &g.prompt_ids, "prompt as token ids, e.g. 1,2,3 (instead of --prompt)");
  f.AddString("prompts-file", &g.prompts_file, "many prompts, one per line");
  f.AddInt("num-prompts", &g.num_prompts, "N random prompts (with --input-len and --output-len)");
  f.AddInt("input-len", &g.input_len, "tokens per random prompt");
  f.AddInt("output-len", &g.output_len, "tokens generated per random prompt (eos ignored)");
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
  f.AddStringList("stop", &g.stop, "a stop string (repeatable); not included in the text");
  f.AddBool("ignore-eos", &g.ignore_eos, "keep generating past end-of-sequence tokens");
  f.AddInt("logprobs", &g.logprobs, "also report the top-n logprobs of each step (JSON only)");
  f.AddBool("json", &g.json, "print JSON objects instead of text");
  f.AddBool("help", &g.help, "show this help");
  f.AddInt("tp", &g.tp, "tensor-parallel ranks (threads of this process; default 1)");
  g.engine.Register(f);
}

// Sampling parameters: flags first, then the model's generation_config.json.
absl::StatusOr<SamplingParams> MakeSamplingParams(const GenerateFlags& g, const ModelConfig& c) {
  SamplingParams p = DefaultSamplingParams(c.generation);
  if (g.temperature) p.temperature = *g.temperature;
  if (g.top_p) p.top_p = *g.top_p;
  if (g.top_k != -2) p.top_k = static_cast<int32_t>(g.top_k);
  p.min_p = g.min_p.value_or(0.0f);
  if (g.repetition_penalty) p.repetition_penalty = *g.repetition_penalty;
  p.frequency_penalty = g.frequency_penalty.value_or(0.0f);
  p.presence_penalty = g.presence_penalty.value_or(0.0f);
  p.seed = g.seed;
  if (g.max_tokens < 1 || g.max_tokens > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-tokens ", g.max_tokens, ": must be >= 1"));
  }
  p.max_tokens = static_cast<uint32_t>(g.max_tokens);
  p.stop_token_ids = g.stop_token_ids;
  p.ignore_eos = g.ignore_eos;
  if (g.logprobs < 0 || g.logprobs > 20) return absl::InvalidArgumentError("--logprobs must be in [0, 20]");
  p.logprobs = static_cast<uint32_t>(g.logprobs);
  for (const std::string& s : g.stop) {
    if (s.empty()) return absl::InvalidArgumentError("--stop: empty stop string");
  }
  RETURN_IF_ERROR(p.Validate());
  return p;
}

// The requests the flags describe (one prompt, a file of prompts, or random).
absl::StatusOr<std::vector<EngineRequest>> MakeRequests(const GenerateFlags& g, const SamplingParams& params,
                                                        const Tokenizer* tok, const ModelConfig& mc) {
  const int sources = !g.prompt.empty() + !g.prompt_ids.empty() + !g.prompts_file.empty() + (g.num_prompts > 0);
  if (sources != 1) {
    return absl::InvalidArgumentError("give exactly one of --prompt, --prompt-ids, --prompts-file, --num-prompts");
  }
  auto need_tokenizer = [&]() -> absl::Status {
    if (tok != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError("the model has no tokenizer.json: use --prompt-ids or --num-prompts");
  };
  std::vector<std::vector<int32_t>> prompts;
  SamplingParams p = params;
  if (!g.prompt_ids.empty()) {
    prompts.push_back(g.prompt_ids);
  } else if (!g.prompt.empty()) {
    RETURN_IF_ERROR(need_tokenizer());
    prompts.push_back(tok->Encode(g.prompt));
  } else if (!g.prompts_file.empty()) {
    RETURN_IF_ERROR(need_tokenizer());
    std::ifstream in(g.prompts_file);
    if (!in) return absl::NotFoundError(absl::StrCat("--prompts-file ", g.prompts_file, ": cannot open"));
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) prompts.push_back(tok->Encode(line));
    }
    if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat(g.prompts_file, ": no prompts"));
  } else {
    if (g.input_len < 1 || g.output_len < 1) {
      return absl::InvalidArgumentError("--num-prompts needs --input-len >= 1 and --output-len >= 1");
    }
    std::mt19937_64 rng(g.seed.value_or(0));
    std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(mc.vocab_size) - 1);
    for (int64_t i = 0; i < g.num_prompts; ++i) {
      std::vector<int32_t> ids(g.input_len);
      for (int32_t& id : ids) id = dist(rng);
      prompts.push_back(std::move(ids));
    }
    p.max_tokens = static_cast<uint32_t>(g.output_len);
    p.ignore_eos = true;
  }
  std::vector<EngineRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r;
    r.request_id = std::to_string(i);
    r.prompt_token_ids = std::move(prompts[i]);
    r.sampling = p;
    requests.push_back(std::move(r));
  }
  return requests;
}

struct Collected {
  std::vector<int32_t> token_ids;
  std::vector<SampledToken> samples;
  std::string text;
  FinishReason finish_reason = FinishReason::kNone;
};

nlohmann::json ToJson(const EngineRequest& r, const Collected& c, bool with_id) {
  nlohmann::json out;
  if (with_id) out["request_id"] = r.request_id;
  out["prompt_token_ids"] = r.prompt_token_ids;
  out["token_ids"] = c.token_ids;
  out["text"] = c.text;
  out["finish_reason"] = FinishReasonName(c.finish_reason);
  if (r.sampling.logprobs > 0) {
    nlohmann::json lps = nlohmann::json::array();
    for (const SampledToken& t : c.samples) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& [id, lp] : t.top_logprobs) top.push_back({{"token_id", id}, {"logprob", lp}});
      lps.push_back({{"token_id", t.token_id}, {"logprob", t.logprob}, {"top_logprobs", top}});
    }
    out["logprobs"] = lps;
  }
  return out;
}

absl::Status Generate(const GenerateFlags& g) {
  const std::filesystem::path dir = g.model.empty() ? DefaultModelDir() : std::filesystem::path(g.model);
  if (g.tp < 1 || g.tp > 64) return absl::InvalidArgumentError("--tp must be in [1, 64]");
  ASSIGN_OR_RETURN(EngineConfig config, g.engine.ToConfig(std::random_device{}(), dir));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> model, LoadExecutor(dir, static_cast<int>(g.tp), config.precision, config.quantization));
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(dir));
  }
  if (!g.stop.empty() && !tokenizer) return absl::FailedPreconditionError("--stop needs the model's tokenizer");
  ASSIGN_OR_RETURN(SamplingParams params, MakeSamplingParams(g, model->config()));
  ASSIGN_OR_RETURN(std::vector<EngineRequest> requests, MakeRequests(g, params, tokenizer.get(), model->config()));
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));

  OutputProcessor processor(tokenizer.get());
  for (const EngineRequest& r : requests) {
    RETURN_IF_ERROR(engine->AddRequest(r));
    processor.Add(r.request_id, r.prompt_token_ids, g.stop);
  }
  // A lone prompt in text mode streams as it is generated.
  const bool stream = requests.size() == 1 && !g.json;
  if (stream && tokenizer) std::cout << tokenizer->Decode(requests[0].prompt_token_ids) << std::flush;

  std::map<std::string, Collected> collected;
  const auto start = std::chrono::steady_clock::now();
  while (engine->HasUnfinishedRequests()) {
    ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine->Step());
    for (TextOutput& t : processor.Process(*engine, outs)) {
      Collected& c = collected[t.request_id];
      c.token_ids.insert(c.token_ids.end(), t.new_token_ids.begin(), t.new_token_ids.end());
      c.samples.insert(c.samples.end(), t.new_samples.begin(), t.new_samples.end());
      c.text += t.new_text;
      if (t.finished) c.finish_reason = t.finish_reason;
      if (stream) std::cout << t.new_text << std::flush;
    }
  }
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (stream) {
    std::cout << "\n";
    return absl::OkStatus();
  }
  const bool many = !g.prompts_file.empty() || g.num_prompts > 0;
  int64_t prompt_tokens = 0, output_tokens = 0;
  for (const EngineRequest& r : requests) {
    const Collected& c = collected[r.request_id];
    prompt_tokens += static_cast<int64_t>(r.prompt_token_ids.size());
    output_tokens += static_cast<int64_t>(c.token_ids.size());
    if (g.json) {
      std::cout << ToJson(r, c, many).dump() << "\n";
    } else {
      std::cout << "--- request " << r.request_id << " (" << FinishReasonName(c.finish_reason) << ")\n"
                << (tokenizer ? tokenizer->Decode(r.prompt_token_ids) : "") << c.text << "\n";
    }
  }
  if (many) {
    const EngineStats stats = engine->Stats();
    nlohmann::json summary = {
        {"num_requests", requests.size()},
        {"batching", g.engine.batching},
        {"elapsed_s", elapsed_s},
        {"requests_per_s", requests.size() / elapsed_s},
        {"output_tokens_per_s", output_tokens / elapsed_s},
        {"total_tokens_per_s", (prompt_tokens + output_tokens) / elapsed_s},
        {"prompt_tokens", prompt_tokens},
        {"output_tokens", output_tokens},
        {"num_steps", stats.num_steps},
        {"num_preemptions", stats.num_preemptions},
        {"prefix_cache_hit_tokens", stats.kv.prefix_hits_tokens},
    };
    std::cout << (g.json ? nlohmann::json{{"summary", summary}}.dump() : "summary: " + summary.dump()) << "\n";
  }
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
    std::cout << "usage: tandem generate [--model DIR] (--prompt TEXT | --prompt-ids 1,2,3 | --prompts-file F |\n"
                 "                        --num-prompts N --input-len L --output-len M) [flags]\n"
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
