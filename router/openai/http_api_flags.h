// The OpenAI HTTP API's flags, shared by tandem-router and `tandem serve`
// (and passed through by `tandem up`): --http-port (off unless given; 0 = a
// free port), --served-model-name, --chat-template FILE, --http-threads;
// and the start-up both processes do with them.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/cli/cli_flags.h"
#include "common/http/http_server.h"
#include "engine/tokenizer/chat_template.h"

namespace tandem::cli {

struct HttpApiFlags {
  int64_t http_port = -1;  // -1: no HTTP API
  int64_t http_threads = 1;
  std::string served_model_name;  // empty: the model directory's name
  std::string chat_template;      // a Jinja file; empty: the model's tokenizer_config.json

  void Register(FlagSet& f);
  // InvalidArgument naming the flag.
  absl::Status Validate() const;
  bool enabled() const { return http_port >= 0; }
  // The id clients name the model by.
  std::string ModelName(const std::filesystem::path& model_dir) const;
};

// The chat template these flags choose for `model_dir`: --chat-template's
// file, else the model's own; nullopt when the model has none (chat
// requests then get 400). Errors: a template that does not load or parse.
absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(const HttpApiFlags& flags,
                                                             const std::filesystem::path& model_dir);

// Starts the HTTP API on `host`:--http-port with `handler` and prints
// "<who>: OpenAI HTTP API on HOST:PORT (model NAME)" (launchers wait for it).
// `grpc_has_tls`: the public gRPC port has TLS (--public-tls-*), which the
// HTTP port does not: a warning says so (API keys cross it in clear; put
// TLS in front of it).
absl::StatusOr<std::unique_ptr<http::Server>> StartHttpApi(const HttpApiFlags& flags, const std::string& host,
                                                           http::Handler handler, const std::string& model_name,
                                                           const std::string& who, bool grpc_has_tls = false);

}  // namespace tandem::cli
