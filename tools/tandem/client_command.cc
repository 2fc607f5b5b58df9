#include "tools/tandem/client_command.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "tandem/v1/generation.grpc.pb.h"
#include "common/cli/cli_flags.h"
#include "common/cli/flag_files.h"

namespace tandem::cli {
namespace {

struct ClientFlags {
  std::string addr = "127.0.0.1:50051";
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::string request_id;
  int64_t max_tokens = 0;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty;
  std::optional<uint64_t> seed;
  int64_t top_k = -2;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int64_t logprobs = 0;
  int64_t timeout_s = 600;
  bool json = false;
  bool help = false;
  std::string api_key;
  std::string tls_ca;  // PEM roots to trust; "system" for the system's
};

// Plaintext, or TLS trusting `tls_ca` ("system": the system's roots).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const std::string& tls_ca) {
  if (tls_ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (tls_ca != "system") {
    absl::StatusOr<std::string> pem = ReadFlagFile("tls-ca", tls_ca);
    if (!pem.ok()) return pem.status();
    options.pem_root_certs = *std::move(pem);
  }
  return grpc::SslCredentials(options);
}

const char* FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_STOP: return "stop";
    default: return "";
  }
}

}  // namespace

int RunClient(const std::vector<std::string>& args) {
  FlagSet flags;
  ClientFlags f;
  flags.AddString("addr", &f.addr, "endpoint host:port (default 127.0.0.1:50051)");
  flags.AddString("prompt", &f.prompt, "prompt text");
  flags.AddIntList("prompt-ids", &f.prompt_ids, "prompt as token ids (instead of --prompt)");
  flags.AddString("request-id", &f.request_id, "request id (default: the server picks)");
  flags.AddString("api-key", &f.api_key, "API key for a server started with --api-key-file (default: $TANDEM_API_KEY)");
  flags.AddString("tls-ca", &f.tls_ca,
                  "connect over TLS trusting this PEM CA file, or 'system' for the system's roots (servers started "
                  "with --public-tls-cert; default: plaintext)");
  flags.AddInt("max-tokens", &f.max_tokens, "tokens to generate at most (default: server's, 16)");
  flags.AddFloat("temperature", &f.temperature, "0 = greedy (default: the model's)");
  flags.AddFloat("top-p", &f.top_p, "nucleus mass in (0, 1]");
  flags.AddInt("top-k", &f.top_k, "keep the k most likely tokens");
  flags.AddFloat("min-p", &f.min_p, "min-p threshold");
  flags.AddFloat("repetition-penalty", &f.repetition_penalty, "HF repetition penalty");
  flags.AddFloat("frequency-penalty", &f.frequency_penalty, "frequency penalty");
  flags.AddFloat("presence-penalty", &f.presence_penalty, "presence penalty");
  flags.AddUint64("seed", &f.seed, "random seed");
  flags.AddStringList("stop", &f.stop, "stop string (repeatable)");
  flags.AddIntList("stop-token-ids", &f.stop_token_ids, "token ids that end generation");
  flags.AddBool("ignore-eos", &f.ignore_eos, "generate past end-of-sequence");
  flags.AddInt("logprobs", &f.logprobs, "top-n logprobs per token (JSON only)");
  flags.AddInt("timeout-s", &f.timeout_s, "deadline of the call in seconds (default 600)");
  flags.AddBool("json", &f.json, "print one JSON object at the end instead of streaming text");
  flags.AddBool("help", &f.help, "show this help");
  if (absl::Status st = flags.Parse(args); !st.ok()) {
    std::cerr << "tandem client: " << st.message() << "\nflags:\n" << flags.Usage();
    return 2;
  }
  if (f.help) {
    std::cout << "usage: tandem client [--addr HOST:PORT] (--prompt TEXT | --prompt-ids 1,2) [flags]\n"
              << flags.Usage();
    return 0;
  }

  v1::GenerateRequest req;
  req.set_request_id(f.request_id);
  req.set_prompt(f.prompt);
  for (int32_t id : f.prompt_ids) req.add_prompt_token_ids(static_cast<uint32_t>(id));
  v1::SamplingParams* s = req.mutable_sampling();
  if (f.temperature) s->set_temperature(*f.temperature);
  if (f.top_p) s->set_top_p(*f.top_p);
  if (f.top_k != -2) s->set_top_k(static_cast<int32_t>(f.top_k));
  if (f.min_p) s->set_min_p(*f.min_p);
  if (f.repetition_penalty) s->set_repetition_penalty(*f.repetition_penalty);
  if (f.frequency_penalty) s->set_frequency_penalty(*f.frequency_penalty);
  if (f.presence_penalty) s->set_presence_penalty(*f.presence_penalty);
  if (f.seed) s->set_seed(*f.seed);
  if (f.max_tokens < 0 || f.max_tokens > (int64_t{1} << 31)) {
    std::cerr << "tandem client: --max-tokens out of range\n";
    return 2;
  }
  s->set_max_tokens(static_cast<uint32_t>(f.max_tokens));
  for (const std::string& stop : f.stop) s->add_stop(stop);
  for (int32_t id : f.stop_token_ids) s->add_stop_token_ids(static_cast<uint32_t>(id));
  s->set_ignore_eos(f.ignore_eos);
  s->set_logprobs(static_cast<uint32_t>(std::max<int64_t>(0, f.logprobs)));

  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ChannelCredentialsFor(f.tls_ca);
  if (!credentials.ok()) {
    std::cerr << "tandem client: " << credentials.status().message() << "\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(f.addr, *credentials);
  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(f.timeout_s));
  std::string api_key = f.api_key;
  if (const char* env = std::getenv("TANDEM_API_KEY"); api_key.empty() && env != nullptr) api_key = env;
  if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse chunk;
  nlohmann::json tokens = nlohmann::json::array();
  nlohmann::json logprobs = nlohmann::json::array();
  std::string text;
  std::string finish;
  uint32_t prompt_tokens = 0, completion_tokens = 0;
  if (!f.json && !f.prompt.empty()) std::cout << f.prompt << std::flush;
  while (reader->Read(&chunk)) {
    text += chunk.text();
    for (uint32_t id : chunk.token_ids()) tokens.push_back(id);
    for (const auto& lp : chunk.logprobs()) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& t : lp.top_logprobs()) top.push_back({{"token_id", t.token_id()}, {"logprob", t.logprob()}});
      logprobs.push_back({{"token_id", lp.token_id()}, {"logprob", lp.logprob()}, {"top_logprobs", top}});
    }
    if (!f.json) std::cout << chunk.text() << std::flush;
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finish = FinishName(chunk.finish_reason());
      prompt_tokens = chunk.usage().prompt_tokens();
      completion_tokens = chunk.usage().completion_tokens();
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (!f.json) std::cout << "\n";
    // gRPC's codes and absl's share numbers and names ("UNAUTHENTICATED").
    std::cerr << "tandem client: "
              << absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) << ": "
              << status.error_message() << "\n";
    return 1;
  }
  if (f.json) {
    nlohmann::json out = {{"token_ids", tokens},
                          {"text", text},
                          {"finish_reason", finish},
                          {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens}}}};
    if (f.logprobs > 0) out["logprobs"] = logprobs;
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "\n";
  }
  return 0;
}

}  // namespace tandem::cli
