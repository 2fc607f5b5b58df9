// build/bin/tandem-router: the router process (thin main over router/): the
// public Generation API, request validation and tokenization, and the
// Admit → Prefill → Decode orchestration over registered workers.
//
// Lifecycle: grpc.health.v1 ("" and tandem.v1.Generation) says SERVING only
// while at least one prefill and one decode worker are live (a readiness
// probe must not send traffic to a router that can only fail); the
// WorkerRegistry always answers. SIGTERM drains: health NOT_SERVING, new
// Generate calls UNAVAILABLE, streams in flight finish (up to
// --drain-timeout-s), then exit 0.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/drain_gate.h"
#include "common/grpc/server.h"
#include "common/net/host_port.h"
#include "common/process/stop_signals.h"
#include "engine/model/model_config.h"
#include "router/cluster_backend.h"
#include "router/pool_metrics.h"
#include "router/request_metrics.h"
#include "router/generation_service.h"
#include "router/readiness.h"
#include "router/registry_service.h"
#include "common/cli/cli_flags.h"
#include "common/metrics/metrics_setup.h"
#include "common/cli/model_path.h"

int main(int argc, char** argv) {
  using namespace tandem;
  process::BlockStopSignals();
  cli::FlagSet flags;
  std::string model, host = "127.0.0.1", prefill_workers, decode_workers;
  int64_t port = 50051, max_queued = 1024, max_queued_tokens = int64_t{1} << 20, max_prefill_tokens_per_worker = 8192,
          prefill_timeout_ms = 120000, drain_timeout_s = 30, lease_renew_ms = 1000,
          max_migrations = 3, decode_idle_timeout_ms = 30000, migration_patience_ms = 30000;
  bool help = false;
  cli::MetricsFlag metrics_flag;
  flags.AddString("model", &model, "HuggingFace model directory: config and tokenizer (default: the bundled model)");
  flags.AddString("host", &host, "address to listen on (default 127.0.0.1)");
  flags.AddInt("port", &port, "port (default 50051; 0 picks a free one)");
  flags.AddString("prefill-workers", &prefill_workers, "static prefill workers, host:port,host:port");
  flags.AddString("decode-workers", &decode_workers, "static decode workers, host:port,host:port");
  flags.AddInt("max-prefill-tokens-per-worker", &max_prefill_tokens_per_worker,
               "admission: requests hold a decode reservation while waiting for or running their prefill only "
               "while their prompt tokens sum to at most this many per live prefill worker (default 8192; one "
               "bigger prompt goes alone); the rest wait in the router's queue");
  flags.AddInt("max-queued", &max_queued,
               "requests that may wait in the router's queue for admission or a decode worker with room (default "
               "1024; then RESOURCE_EXHAUSTED)");
  flags.AddInt("max-queued-tokens", &max_queued_tokens,
               "prompt tokens that may wait in the router's queue (default 1048576; then RESOURCE_EXHAUSTED)");
  flags.AddInt("prefill-timeout-ms", &prefill_timeout_ms, "one prefill call incl. its KV transfer");
  flags.AddInt("max-migrations", &max_migrations,
               "move a request whose decode worker fails mid-stream to another one at most this many times "
               "(token replay; default 3; 0: end such streams UNAVAILABLE)");
  flags.AddInt("migration-patience-ms", &migration_patience_ms,
               "a request that has streamed tokens and finds no worker to continue it waits this long for one "
               "(retried every --lease-renew-ms) before it ends UNAVAILABLE (default 30000)");
  flags.AddInt("decode-idle-timeout-ms", &decode_idle_timeout_ms,
               "a Decode stream with no token for this long is a stalled worker: cancel it and migrate the request "
               "(default 30000)");
  flags.AddInt("lease-renew-ms", &lease_renew_ms,
               "renew the decode reservations of requests waiting for their prefill this often (default 1000; keep "
               "it well under the decode workers' --reservation-timeout-ms)");
  flags.AddInt("drain-timeout-s", &drain_timeout_s,
               "on SIGTERM, how long streams in flight may run on before the router exits (default 30)");
  metrics_flag.Register(flags);
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
  if (decode_idle_timeout_ms < 100) {
    std::cerr << "tandem-router: --decode-idle-timeout-ms must be >= 100\n";
    return 2;
  }
  if (max_migrations < 0 || max_migrations > 100) {
    std::cerr << "tandem-router: --max-migrations must be in [0, 100]\n";
    return 2;
  }
  if (migration_patience_ms < 0 || migration_patience_ms > 3600000) {
    std::cerr << "tandem-router: --migration-patience-ms must be in [0, 3600000]\n";
    return 2;
  }
  if (lease_renew_ms < 10 || lease_renew_ms > 600000) {
    std::cerr << "tandem-router: --lease-renew-ms must be in [10, 600000]\n";
    return 2;
  }
  if (max_prefill_tokens_per_worker < 1 || max_prefill_tokens_per_worker > (int64_t{1} << 40)) {
    std::cerr << "tandem-router: --max-prefill-tokens-per-worker must be in [1, 2^40]\n";
    return 2;
  }
  if (max_queued < 0 || max_queued > 1000000) {
    std::cerr << "tandem-router: --max-queued must be in [0, 1000000]\n";
    return 2;
  }
  if (max_queued_tokens < 0 || max_queued_tokens > (int64_t{1} << 40)) {
    std::cerr << "tandem-router: --max-queued-tokens must be in [0, 2^40]\n";
    return 2;
  }
  if (drain_timeout_s < 0) {
    std::cerr << "tandem-router: --drain-timeout-s must be >= 0\n";
    return 2;
  }
  const std::filesystem::path dir = model.empty() ? cli::DefaultModelDir() : std::filesystem::path(model);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return fail(config.status());
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(dir);
    if (!t.ok()) return fail(t.status());
    tokenizer = *std::move(t);
  }
  WorkerPool pool;
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
  options.max_queued = static_cast<int>(max_queued);
  options.max_queued_tokens = max_queued_tokens;
  options.max_prefill_tokens_per_worker = max_prefill_tokens_per_worker;
  options.prefill_timeout = std::chrono::milliseconds(prefill_timeout_ms);
  options.lease_renew_interval = std::chrono::milliseconds(lease_renew_ms);
  options.max_migrations = static_cast<int>(max_migrations);
  options.migration_patience = std::chrono::milliseconds(migration_patience_ms);
  options.decode_idle_timeout = std::chrono::milliseconds(decode_idle_timeout_ms);
  options.observe_queue_time = [m = request_metrics->get()](double seconds) { m->ObserveQueueTime(seconds); };
  options.on_migration = [m = request_metrics->get()] { m->CountMigration(); };
  ClusterBackend backend(&pool, tokenizer.get(), *config, options);
  backend_for_metrics = &backend;
  DrainGate gate;  // outlives the server: its tickets live in the server's calls
  Readiness readiness(&pool, &gate);
  GenerationService generation(RequestValidator(*config, tokenizer.get()), &backend, request_metrics->get(), &gate);
  RegistryService registry(&pool, &readiness);
  int bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(net::JoinHostPort(host, port), {&generation, &registry}, &bound_port, /*serving=*/false);
  if (!server.ok()) return fail(server.status());
  (*server)->GetHealthCheckService()->SetServingStatus(v1::WorkerRegistry::service_full_name(), true);
  readiness.Attach([srv = server->get(), logged = false](bool ready) mutable {
    SetHealth(srv, ready, {v1::Generation::service_full_name()});
    if (ready || logged) {
      std::cout << "tandem-router: " << (ready ? "SERVING (prefill and decode workers registered)"
                                               : "NOT_SERVING (no live prefill or decode worker, or draining)")
                << std::endl;
    }
    logged = true;
  });
  // Declared after everything its callbacks read, so it stops first; up before the
  // listening line, so a launcher that waits for that line can scrape at once.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, host, "tandem-router");
  if (!metrics_server.ok()) return fail(metrics_server.status());
  std::cout << "tandem-router: listening on " << net::JoinHostPort(host, bound_port) << " (model " << dir.string()
            << ")" << std::endl;
  // Registrations update readiness themselves; a heartbeat's expiry is no
  // event, so it is polled (every 200 ms, between signals).
  while (process::WaitForStopSignalFor(std::chrono::milliseconds(200)) == 0) readiness.Update();
  gate.StartDraining();
  readiness.Update();  // NOT_SERVING from now on
  std::cout << "tandem-router: draining " << gate.num_in_flight() << " streams (up to " << drain_timeout_s << " s)"
            << std::endl;
  if (!process::WaitUntilIdle([&gate] { return gate.num_in_flight() == 0; }, std::chrono::seconds(drain_timeout_s))) {
    std::cerr << "tandem-router: drain timeout: cancelling " << gate.num_in_flight() << " streams\n";
  }
  if (*metrics_server) (*metrics_server)->Stop();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
