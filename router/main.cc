// build/bin/tandem-router: the router process (thin main over router/): the
// public Generation API, request validation and tokenization, and the
// Admit → Prefill → Decode orchestration over registered workers.
//
// Two listeners (RouterListenFlags): the public one (--host/--port) serves
// Generation, health and reflection only; the cluster one
// (--cluster-host/--cluster-port) serves the WorkerRegistry, health and
// reflection, for workers and launchers on the internal network. A client of
// the public port cannot register a worker or list them (UNIMPLEMENTED).
//
// Lifecycle: the public listener's grpc.health.v1 ("" and
// tandem.v1.Generation) says SERVING only while at least one prefill and one
// decode worker are live (a readiness probe must not send traffic to a
// router that can only fail); the cluster listener's ("" and
// tandem.v1.WorkerRegistry, the liveness) always says SERVING, and the
// registry always answers. SIGTERM drains: public health NOT_SERVING, new
// Generate calls UNAVAILABLE, streams in flight finish (up to
// --drain-timeout-s), workers keep heartbeating meanwhile; then both
// listeners shut down and the process exits 0.
#include <csignal>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/drain_gate.h"
#include "common/grpc/cluster_tls_flags.h"
#include "common/grpc/server.h"
#include "common/net/host_port.h"
#include "common/process/stop_signals.h"
#include "engine/model/model_config.h"
#include "router/api_key_flags.h"
#include "router/openai/http_api_flags.h"
#include "router/openai/openai_service.h"
#include "router/public_tls_flags.h"
#include "router/cluster_backend.h"
#include "router/pool_metrics.h"
#include "router/request_metrics.h"
#include "router/generation_service.h"
#include "router/readiness.h"
#include "router/registry_service.h"
#include "router/router_flags.h"
#include "common/cli/cli_flags.h"
#include "common/metrics/metrics_setup.h"
#include "common/cli/model_path.h"

int main(int argc, char** argv) {
  using namespace tandem;
  process::BlockStopSignals();
  cli::FlagSet flags;
  std::string model, prefill_workers, decode_workers;
  cli::RouterListenFlags listen;
  cli::RouterTuningFlags tuning;
  bool help = false;
  cli::MetricsFlag metrics_flag;
  cli::ApiKeyFlags api_key_flags;
  cli::PublicTlsFlags public_tls;
  cli::ClusterTlsFlags cluster_tls_flags;
  cli::HttpApiFlags http_flags;
  flags.AddString("model", &model, "HuggingFace model directory: config and tokenizer (default: the bundled model)");
  listen.Register(flags);
  flags.AddString("prefill-workers", &prefill_workers, "static prefill workers, host:port,host:port");
  flags.AddString("decode-workers", &decode_workers, "static decode workers, host:port,host:port");
  tuning.Register(flags);
  metrics_flag.Register(flags);
  api_key_flags.Register(flags);
  public_tls.Register(flags);
  cluster_tls_flags.Register(flags);
  http_flags.Register(flags);
  flags.AddBool("help", &help, "show this help");
  if (absl::Status st = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !st.ok() || help) {
    (st.ok() ? std::cout : std::cerr) << (st.ok() ? "" : std::string(st.message()) + "\n")
                                      << "usage: tandem-router [flags]\n" << flags.Usage();
    return st.ok() ? 0 : 2;
  }
  auto fail = [](const absl::Status& st) {
    std::cerr << "tandem-router: " << st << "\n";
    return 1;
  };
  if (absl::Status st = metrics_flag.Parse().status(); !st.ok()) {
    std::cerr << "tandem-router: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = listen.Validate(); !st.ok()) {
    std::cerr << "tandem-router: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = http_flags.Validate(); !st.ok()) {
    std::cerr << "tandem-router: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = tuning.Validate(); !st.ok()) {
    std::cerr << "tandem-router: " << st.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> public_credentials = public_tls.Load();
  if (!public_credentials.ok()) {
    std::cerr << "tandem-router: " << public_credentials.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::shared_ptr<const ClusterTls>> cluster_tls =
      cluster_tls_flags.Load(tls::ClusterRole::kRouter, "tandem-router");
  if (!cluster_tls.ok()) {
    std::cerr << "tandem-router: " << cluster_tls.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> auth = api_key_flags.Load();
  if (!auth.ok()) {
    std::cerr << "tandem-router: " << auth.status().message() << "\n";
    return 2;
  }
  if (*auth != nullptr) process::BlockReloadSignal();  // before any thread starts
  const std::filesystem::path dir = model.empty() ? cli::DefaultModelDir() : std::filesystem::path(model);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return fail(config.status());
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(dir);
    if (!t.ok()) return fail(t.status());
    tokenizer = *std::move(t);
  }
  WorkerPool pool(*cluster_tls);
  int n = 0;
  for (absl::string_view a : absl::StrSplit(prefill_workers, ',', absl::SkipEmpty())) {
    pool.Add(v1::WORKER_ROLE_PREFILL, absl::StrCat("prefill-static-", n++), std::string(a));
  }
  for (absl::string_view a : absl::StrSplit(decode_workers, ',', absl::SkipEmpty())) {
    pool.Add(v1::WORKER_ROLE_DECODE, absl::StrCat("decode-static-", n++), std::string(a));
  }
  // Metrics are always kept (a few atomics per token); --metrics-port only decides whether they are served.
  metrics::Registry metrics_registry;
  const std::string model_label = cli::ModelLabel(dir);
  const ClusterBackend* backend_for_metrics = nullptr;  // set below, before the metrics server starts
  absl::StatusOr<std::unique_ptr<RequestMetrics>> request_metrics = RequestMetrics::Create(
      &metrics_registry, {{"model", model_label}, {"role", "router"}},
      [&backend_for_metrics] { return static_cast<double>(backend_for_metrics->num_queued()); });
  if (!request_metrics.ok()) return fail(request_metrics.status());
  if (absl::Status st = ExportWorkerPoolMetrics(&metrics_registry, {{"model", model_label}}, &pool); !st.ok()) {
    return fail(st);
  }
  if (absl::Status st = ExportAdmissionMetrics(
          &metrics_registry, {{"model", model_label}, {"role", "router"}},
          [&backend_for_metrics] { return static_cast<double>(backend_for_metrics->queued_tokens()); },
          [&backend_for_metrics] { return static_cast<double>(backend_for_metrics->window_tokens()); });
      !st.ok()) {
    return fail(st);
  }
  ClusterOptions options;
  tuning.Apply(&options);
  options.observe_queue_time = [m = request_metrics->get()](double seconds) { m->ObserveQueueTime(seconds); };
  options.on_migration = [m = request_metrics->get()] { m->CountMigration(); };
  ClusterBackend backend(&pool, tokenizer.get(), *config, options);
  backend_for_metrics = &backend;
  if (absl::Status st = ExportRoutingMetrics(&metrics_registry, {{"model", model_label}}, &backend.kv_router(), &pool);
      !st.ok()) {
    return fail(st);
  }
  DrainGate gate;  // outlives the server: its tickets live in the server's calls
  Readiness readiness(&pool, &gate);
  GenerationService generation(RequestValidator(*config, tokenizer.get()), &backend, request_metrics->get(), &gate,
                               auth->get());
  RegistryService registry(&pool, &readiness, *cluster_tls, &backend.kv_router());
  // The control plane first: workers may register as soon as the public
  // listener's line tells a launcher to start them.
  int cluster_bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> cluster_server = StartGrpcServer(
      net::JoinHostPort(listen.ClusterHost(), listen.cluster_port), {&registry}, &cluster_bound_port,
      /*serving=*/true, (*cluster_tls)->ServerCredentials());
  if (!cluster_server.ok()) return fail(cluster_server.status());
  SetHealth(cluster_server->get(), true, {v1::WorkerRegistry::service_full_name()});
  int bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(net::JoinHostPort(listen.host, listen.port), {&generation}, &bound_port, /*serving=*/false,
                      *public_credentials);
  if (!server.ok()) return fail(server.status());
  // Readiness also shows on the cluster listener under tandem.v1.Generation:
  // probes that cannot speak TLS (Kubernetes' gRPC probes) ask there when
  // the public port has TLS.
  readiness.Attach([srv = server->get(), cluster = cluster_server->get(), logged = false](bool ready) mutable {
    SetHealth(srv, ready, {v1::Generation::service_full_name()});
    cluster->GetHealthCheckService()->SetServingStatus(v1::Generation::service_full_name(), ready);
    if (ready || logged) {
      std::cout << "tandem-router: " << (ready ? "SERVING (prefill and decode workers registered)"
                                               : "NOT_SERVING (no live prefill or decode worker, or draining)")
                << std::endl;
    }
    logged = true;
  });
  // The OpenAI HTTP API on the same validator, backend, metrics, drain gate
  // and keys as Generation; ready when the public gRPC health says SERVING.
  std::unique_ptr<openai::OpenAiService> http_service;
  std::unique_ptr<http::Server> http_server;
  if (http_flags.enabled()) {
    absl::StatusOr<std::optional<ChatTemplate>> chat_template = cli::LoadChatTemplate(http_flags, dir);
    if (!chat_template.ok()) return fail(chat_template.status());
    openai::ServiceOptions options;
    options.model_name = http_flags.ModelName(dir);
    options.max_model_len = config->max_position_embeddings;
    options.ready = [&readiness] { return readiness.Update(); };
    options.metric_labels = {{"model", model_label}, {"role", "router"}};
    absl::StatusOr<std::unique_ptr<openai::OpenAiService>> s = openai::OpenAiService::Create(
        RequestValidator(*config, tokenizer.get()), tokenizer.get(), *std::move(chat_template), &backend,
        request_metrics->get(), &gate, auth->get(), &metrics_registry, std::move(options));
    if (!s.ok()) return fail(s.status());
    http_service = *std::move(s);
    absl::StatusOr<std::unique_ptr<http::Server>> hs =
        cli::StartHttpApi(http_flags, listen.host, http_service->handler(), http_flags.ModelName(dir), "tandem-router",
                          !public_tls.cert_file.empty());
    if (!hs.ok()) return fail(hs.status());
    http_server = *std::move(hs);
  }
  // Declared after everything its callbacks read, so it stops first; up before the
  // listening line, so a launcher that waits for that line can scrape at once.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, listen.host, "tandem-router");
  if (!metrics_server.ok()) return fail(metrics_server.status());
  // Launchers read the cluster line first, then wait for the public one.
  std::cout << "tandem-router: cluster listener on " << net::JoinHostPort(listen.ClusterHost(), cluster_bound_port)
            << " (worker registry, " << ((*cluster_tls)->secure() ? "mTLS" : "PLAINTEXT: --insecure-cluster") << ")"
            << std::endl;
  std::cout << "tandem-router: listening on " << net::JoinHostPort(listen.host, bound_port) << " (model "
            << dir.string() << ", routing " << RoutingModeName(options.routing.mode) << ")" << std::endl;
  // Registrations update readiness themselves; a heartbeat's expiry is no
  // event, so it is polled (every 200 ms, between signals).
  for (int sig = 0; (sig = process::WaitForStopSignalFor(std::chrono::milliseconds(200))) == 0 || sig == SIGHUP;) {
    if (sig == SIGHUP) cli::ReloadApiKeys(auth->get(), "tandem-router");
    cli::ReloadApiKeysIfChanged(auth->get(), "tandem-router");
    readiness.Update();
  }
  gate.StartDraining();
  readiness.Update();  // NOT_SERVING from now on
  std::cout << "tandem-router: draining " << gate.num_in_flight() << " streams (up to " << tuning.drain_timeout_s << " s)"
            << std::endl;
  if (!process::WaitUntilIdle([&gate] { return gate.num_in_flight() == 0; }, std::chrono::seconds(tuning.drain_timeout_s))) {
    std::cerr << "tandem-router: drain timeout: cancelling " << gate.num_in_flight() << " streams\n";
  }
  if (*metrics_server) (*metrics_server)->Stop();
  if (http_server) http_server->Stop();  // streams still open past the drain are cancelled
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  (*cluster_server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
