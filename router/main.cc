// build/bin/tandem-router: the router process (thin main over router/): the
// public Generation API, request validation and tokenization, and the
// Admit → Prefill → Decode orchestration over registered workers.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc/server.h"
#include "decode_worker/worker_runtime.h"
#include "engine/model/model_config.h"
#include "router/cluster_backend.h"
#include "router/pool_metrics.h"
#include "router/request_metrics.h"
#include "router/generation_service.h"
#include "router/registry_service.h"
#include "tools/tandem/cli_flags.h"
#include "tools/tandem/metrics_setup.h"
#include "tools/tandem/model_path.h"

int main(int argc, char** argv) {
  using namespace tandem;
  BlockStopSignals();
  cli::FlagSet flags;
  std::string model, host = "127.0.0.1", prefill_workers, decode_workers;
  int64_t port = 50051, max_queued = 256, prefill_timeout_ms = 120000;
  bool help = false;
  cli::MetricsFlag metrics_flag;
  flags.AddString("model", &model, "HuggingFace model directory: config and tokenizer (default: the bundled model)");
  flags.AddString("host", &host, "address to listen on (default 127.0.0.1)");
  flags.AddInt("port", &port, "port (default 50051; 0 picks a free one)");
  flags.AddString("prefill-workers", &prefill_workers, "static prefill workers, host:port,host:port");
  flags.AddString("decode-workers", &decode_workers, "static decode workers, host:port,host:port");
  flags.AddInt("max-queued", &max_queued, "requests that may wait for a decode worker (then RESOURCE_EXHAUSTED)");
  flags.AddInt("prefill-timeout-ms", &prefill_timeout_ms, "one prefill call incl. its KV transfer");
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
  ClusterOptions options;
  options.max_queued = static_cast<int>(max_queued);
  options.prefill_timeout = std::chrono::milliseconds(prefill_timeout_ms);
  options.observe_queue_time = [m = request_metrics->get()](double seconds) { m->ObserveQueueTime(seconds); };
  ClusterBackend backend(&pool, tokenizer.get(), *config, options);
  backend_for_metrics = &backend;
  GenerationService generation(RequestValidator(*config, tokenizer.get()), &backend, request_metrics->get());
  RegistryService registry(&pool);
  int bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(absl::StrCat(host, ":", port), {&generation, &registry}, &bound_port);
  if (!server.ok()) return fail(server.status());
  // Declared after everything its callbacks read, so it stops first; up before the
  // listening line, so a launcher that waits for that line can scrape at once.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, host, "tandem-router");
  if (!metrics_server.ok()) return fail(metrics_server.status());
  std::cout << "tandem-router: listening on " << host << ":" << bound_port << " (model " << dir.string() << ")"
            << std::endl;
  WaitForStopSignal();
  if (*metrics_server) (*metrics_server)->Stop();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
