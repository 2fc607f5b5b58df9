#include "router/openai/http_api_flags.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/net/host_port.h"

namespace tandem::cli {

void HttpApiFlags::Register(FlagSet& f) {
  f.AddInt("http-port", &http_port,
           "serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /health) on "
           "this port of --host (0: a free port; default: off)");
  f.AddInt("http-threads", &http_threads, "event-loop threads of the HTTP API (default 1)");
  f.AddString("served-model-name", &served_model_name,
              "the model id the HTTP API lists and requests name (default: the model directory's name)");
  f.AddString("chat-template", &chat_template,
              "a Jinja chat template file for /v1/chat/completions (default: the model's tokenizer_config.json)");
}

absl::Status HttpApiFlags::Validate() const {
  if (http_port < -1 || http_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-port ", http_port, ": must be in [0, 65535]"));
  }
  if (http_threads < 1 || http_threads > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--http-threads ", http_threads, ": must be in [1, 64]"));
  }
  if (!enabled() && (!served_model_name.empty() || !chat_template.empty())) {
    return absl::InvalidArgumentError("--served-model-name and --chat-template need --http-port");
  }
  return absl::OkStatus();
}

std::string HttpApiFlags::ModelName(const std::filesystem::path& model_dir) const {
  if (!served_model_name.empty()) return served_model_name;
  std::filesystem::path p = model_dir;
  if (!p.has_filename()) p = p.parent_path();  // "dir/" names "dir"
  return p.filename().string();
}

absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(const HttpApiFlags& flags,
                                                             const std::filesystem::path& model_dir) {
  if (!flags.chat_template.empty()) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromFileForModel(flags.chat_template, model_dir);
    if (!t.ok()) return t.status();
    return std::optional<ChatTemplate>(*std::move(t));
  }
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(model_dir);
  if (absl::IsNotFound(t.status())) return std::optional<ChatTemplate>();
  if (!t.ok()) return t.status();
  return std::optional<ChatTemplate>(*std::move(t));
}

absl::StatusOr<std::unique_ptr<http::Server>> StartHttpApi(const HttpApiFlags& flags, const std::string& host,
                                                           http::Handler handler, const std::string& model_name,
                                                           const std::string& who, bool grpc_has_tls) {
  http::ServerOptions options;
  options.threads = static_cast<int>(flags.http_threads);
  absl::StatusOr<std::unique_ptr<http::Server>> server =
      http::Server::Start(host, static_cast<int>(flags.http_port), std::move(handler), options);
  if (!server.ok()) return server.status();
  if (grpc_has_tls) {
    std::cerr << who << ": warning: the OpenAI HTTP API is plaintext HTTP (--public-tls-* covers the gRPC port "
              << "only); terminate TLS in front of port " << (*server)->port() << " (API keys cross it)\n";
  }
  std::cout << who << ": OpenAI HTTP API on " << net::JoinHostPort(host, (*server)->port()) << " (model "
            << model_name << ")" << std::endl;
  return server;
}

}  // namespace tandem::cli
