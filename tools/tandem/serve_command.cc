#include "tools/tandem/serve_command.h"

#include <csignal>
#include <iostream>
#include <random>

#include "common/grpc/server.h"
#include "common/net/host_port.h"
#include "common/process/stop_signals.h"
#include "common/status_macros.h"
#include "engine/core/async_engine.h"
#include "worker/worker_metrics.h"
#include "router/api_key_flags.h"
#include "router/openai/http_api_flags.h"
#include "router/openai/openai_service.h"
#include "router/public_tls_flags.h"
#include "router/generation_service.h"
#include "router/request_metrics.h"
#include "common/cli/cli_flags.h"
#include "tools/tandem/colocated_backend.h"
#include "worker/engine_flags.h"
#include "common/metrics/metrics_setup.h"
#include "common/cli/model_path.h"

namespace tandem::cli {
namespace {

struct ServeFlags {
  std::string model;
  std::string host = "127.0.0.1";
  int64_t port = 50051;
  std::optional<uint64_t> seed;
  bool help = false;
  int64_t tp = 1;
  EngineFlags engine;
  MetricsFlag metrics;
  ApiKeyFlags api_keys;
  PublicTlsFlags public_tls;
  HttpApiFlags http;
};

absl::Status Serve(const ServeFlags& f) {
  const std::filesystem::path dir = f.model.empty() ? DefaultModelDir() : std::filesystem::path(f.model);
  if (f.tp < 1 || f.tp > 64) return absl::InvalidArgumentError("--tp must be in [1, 64]");
  ASSIGN_OR_RETURN(std::unique_ptr<ApiKeyAuth> auth, f.api_keys.Load());
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, f.public_tls.Load());
  if (auth != nullptr) process::BlockReloadSignal();  // before the engine's threads start
  ASSIGN_OR_RETURN(EngineConfig engine_config, f.engine.ToConfig(f.seed.value_or(std::random_device{}()), dir));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> model,
                   LoadExecutor(dir, static_cast<int>(f.tp), engine_config.precision, engine_config.quantization));
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(dir));
  }
  const ModelConfig config = model->config();
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), engine_config));
  // Outlives the engine: its step listener observes into the registry until the loop stops.
  metrics::Registry metrics_registry;
  AsyncEngine async_engine(std::move(engine), tokenizer.get());
  RETURN_IF_ERROR(async_engine.WarmUp());  // on the engine's own thread (async_engine.h)
  ColocatedBackend backend(&async_engine);
  // One process is router and worker: the request metrics and the engine's,
  // both under role "colocated" (queued = waiting in the engine).
  const std::string model_label = ModelLabel(dir);
  ASSIGN_OR_RETURN(std::unique_ptr<RequestMetrics> request_metrics,
                   RequestMetrics::Create(&metrics_registry, {{"model", model_label}, {"role", "colocated"}},
                                          [&async_engine] { return static_cast<double>(async_engine.Stats().num_waiting); }));
  const metrics::Labels engine_labels = {{"model", model_label}, {"worker", "colocated"}, {"role", "colocated"}};
  RETURN_IF_ERROR(ExportEngineMetrics(&metrics_registry, engine_labels, &async_engine,
                                      request_metrics->queue_time_family()));
  RETURN_IF_ERROR(ExportEngineInfo(&metrics_registry, engine_labels, EngineArithmeticLabels(engine_config)));
  GenerationService service(RequestValidator(config, tokenizer.get()), &backend, request_metrics.get(), nullptr,
                            auth.get());

  if (f.port < 0 || f.port > 65535) return absl::InvalidArgumentError("--port must be in [0, 65535]");
  int bound_port = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<grpc::Server> server,
                   StartGrpcServer(net::JoinHostPort(f.host, f.port), {&service}, &bound_port, true, credentials));
  // The OpenAI HTTP API beside gRPC, on the same validator, backend and metrics.
  std::unique_ptr<openai::OpenAiService> http_service;
  std::unique_ptr<http::Server> http_server;
  if (f.http.enabled()) {
    ASSIGN_OR_RETURN(std::optional<ChatTemplate> chat_template, LoadChatTemplate(f.http, dir));
    openai::ServiceOptions options;
    options.model_name = f.http.ModelName(dir);
    options.max_model_len = config.max_position_embeddings;
    options.metric_labels = {{"model", model_label}, {"role", "colocated"}};
    ASSIGN_OR_RETURN(http_service, openai::OpenAiService::Create(RequestValidator(config, tokenizer.get()),
                                                                 tokenizer.get(), std::move(chat_template), &backend,
                                                                 request_metrics.get(), nullptr, auth.get(),
                                                                 &metrics_registry, std::move(options)));
    ASSIGN_OR_RETURN(http_server, StartHttpApi(f.http, f.host, http_service->handler(), f.http.ModelName(dir),
                                               "tandem serve", !f.public_tls.cert_file.empty()));
  }
  // Stopped (by its destructor) before anything its callbacks read.
  ASSIGN_OR_RETURN(std::unique_ptr<metrics::MetricsServer> metrics_server,
                   StartMetricsServer(&metrics_registry, f.metrics, f.host, "tandem serve"));
  std::cout << "tandem serve: listening on " << net::JoinHostPort(f.host, bound_port) << " (model " << dir.string()
            << "; " << DescribeEngineArithmetic(engine_config) << ")" << std::endl;
  int sig = 0;
  while ((sig = process::WaitForStopSignalFor(std::chrono::seconds(1))) == 0 || sig == SIGHUP) {
    if (sig == SIGHUP) ReloadApiKeys(auth.get(), "tandem serve");
    ReloadApiKeysIfChanged(auth.get(), "tandem serve");
  }
  std::cout << "tandem serve: signal " << sig << ", shutting down" << std::endl;
  if (metrics_server) metrics_server->Stop();
  if (http_server) http_server->Stop();  // open streams are cancelled in the engine
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return absl::OkStatus();
}

}  // namespace

int RunServe(const std::vector<std::string>& args) {
  // Block the stop signals before gRPC or the engine start threads.
  process::BlockStopSignals();

  FlagSet flags;
  ServeFlags f;
  flags.AddString("model", &f.model, "HuggingFace model directory (default: the bundled model)");
  flags.AddString("host", &f.host, "address to listen on (default 127.0.0.1)");
  flags.AddInt("port", &f.port, "port to listen on (default 50051; 0 picks a free one)");
  flags.AddUint64("seed", &f.seed, "seed for requests that carry none");
  flags.AddBool("help", &f.help, "show this help");
  flags.AddInt("tp", &f.tp, "tensor-parallel ranks (threads of this process; default 1)");
  f.engine.Register(flags);
  f.metrics.Register(flags);
  f.api_keys.Register(flags);
  f.public_tls.Register(flags);
  f.http.Register(flags);
  absl::Status parsed = flags.Parse(args);
  if (parsed.ok()) parsed = f.http.Validate();
  if (parsed.ok()) parsed = f.metrics.Parse().status();  // a bad port is a usage error, before loading the model
  if (parsed.ok()) parsed = f.public_tls.Load().status();  // likewise bad TLS files or keys
  if (parsed.ok()) parsed = f.api_keys.Load().status();
  if (absl::Status st = parsed; !st.ok()) {
    std::cerr << "tandem serve: " << st.message() << "\nflags:\n" << flags.Usage();
    return 2;
  }
  if (f.help) {
    std::cout << "usage: tandem serve [--model DIR] [--port P] [flags]\n" << flags.Usage();
    return 0;
  }
  if (absl::Status st = Serve(f); !st.ok()) {
    std::cerr << "tandem serve: " << st << "\n";
    return 1;
  }
  return 0;
}

}  // namespace tandem::cli
