// build/bin/tandem-prefill-worker: a prefill worker process (thin main over
// prefill_worker/): computes prompts' KV and puts it into decode workers'
// reserved blocks over the KV transport, returning the first token.
// SIGTERM drains: the router is told (draining registration) and new
// Prefill calls get UNAVAILABLE; prefills in flight finish and ship (up to
// --drain-timeout-s); then exit 0.
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/drain_gate.h"
#include "common/grpc/server.h"
#include "common/net/host_port.h"
#include "decode_worker/worker_runtime.h"
#include "prefill_worker/prefill_service.h"
#include "decode_worker/worker_metrics.h"
#include "tools/tandem/engine_flags.h"
#include "tools/tandem/metrics_setup.h"
#include "tools/tandem/worker_flags.h"
#include "tools/tandem/model_path.h"

int main(int argc, char** argv) {
  using namespace tandem;
  BlockStopSignals();
  cli::FlagSet flags;
  cli::WorkerFlags wf;
  int64_t flush_timeout_ms = 30000, sender_threads = 2;
  cli::MetricsFlag metrics_flag;
  wf.Register(flags, "prefill");
  metrics_flag.Register(flags);
  flags.AddInt("kv-flush-timeout-ms", &flush_timeout_ms, "longest wait for a KV transfer to complete");
  flags.AddInt("kv-sender-threads", &sender_threads, "concurrent KV transfers (default 2)");
  if (absl::Status st = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !st.ok() || wf.help) {
    (st.ok() ? std::cout : std::cerr) << (st.ok() ? "" : std::string(st.message()) + "\n")
                                      << "usage: tandem-prefill-worker [flags]\n" << flags.Usage();
    return st.ok() ? 0 : 2;
  }
  auto fail = [](const absl::Status& st) {
    std::cerr << "tandem-prefill-worker: " << st << "\n";
    return 1;
  };
  if (absl::Status st = metrics_flag.Parse().status(); !st.ok()) {
    std::cerr << "tandem-prefill-worker: " << st.message() << "\n";
    return 2;
  }
  // Outlives the engine and the transports: the step listener observes into it until the loop stops.
  metrics::Registry metrics_registry;
  if (sender_threads < 1 || sender_threads > 64) return fail(absl::InvalidArgumentError("--kv-sender-threads in [1, 64]"));
  absl::StatusOr<EngineConfig> config = wf.engine.ToConfig(std::random_device{}());
  if (!config.ok()) return fail(config.status());
  if (wf.tp < 1 || wf.tp > 64) return fail(absl::InvalidArgumentError("--tp must be in [1, 64]"));
  if (wf.drain_timeout_s < 0) {
    return fail(absl::InvalidArgumentError("--drain-timeout-s must be >= 0"));
  }
  absl::StatusOr<WorkerModel> w = LoadWorkerModel(wf.model.empty() ? cli::DefaultModelDir().string() : wf.model, *config,
                                                  static_cast<int>(wf.tp));
  if (!w.ok()) return fail(w.status());
  absl::StatusOr<RankTransports> kv = RegisterRankPools(wf.kv_transport, *w);
  if (!kv.ok()) return fail(kv.status());
  LocalKvGroup local;
  local.total_kv_heads = w->config.num_key_value_heads;
  for (size_t r = 0; r < w->ranks.size(); ++r) {
    const KvCacheShape& shape = w->ranks[r].shape;
    local.ranks.push_back({kv->transports[r].get(),
                           {shape.num_layers, shape.num_blocks, shape.block_span_bytes(), shape.num_kv_heads},
                           {w->ranks[r].kv_head_begin, shape.num_kv_heads}});
  }
  auto sender = std::make_unique<KvSender>(&local, std::chrono::milliseconds(flush_timeout_ms),
                                           static_cast<int>(sender_threads));
  auto shipper = std::make_unique<LayerShipper>(&local);
  w->engine->RunOnLoop([&](LlmEngine& e) { e.SetStepObserver(shipper.get()); });
  DrainGate gate;  // outlives the server: its tickets live in the server's calls
  auto service = std::make_unique<PrefillService>(w->engine.get(), shipper.get(), sender.get(), wf.worker_id, &gate);
  int bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(net::JoinHostPort(wf.host, wf.port), {service.get()}, &bound_port);
  if (!server.ok()) return fail(server.status());
  // SERVING for as long as the process runs (liveness); "" (readiness) goes
  // NOT_SERVING when the drain starts.
  (*server)->GetHealthCheckService()->SetServingStatus(v1::PrefillWorker::service_full_name(), true);
  if (wf.worker_id.empty()) wf.worker_id = absl::StrCat("prefill-", bound_port);
  service->set_worker_id(wf.worker_id);
  const metrics::Labels metric_labels = {{"model", cli::ModelLabel(wf.model.empty() ? cli::DefaultModelDir() : std::filesystem::path(wf.model))},
                                         {"worker", wf.worker_id}, {"role", "prefill"}};
  if (absl::Status st = ExportEngineMetrics(&metrics_registry, metric_labels, w->engine.get()); !st.ok()) return fail(st);
  std::vector<const KvTransport*> rank_transports;
  for (const auto& t : kv->transports) rank_transports.push_back(t.get());
  absl::StatusOr<prometheus::Histogram*> transfer_seconds =
      ExportTransportMetrics(&metrics_registry, metric_labels, std::move(rank_transports));
  if (!transfer_seconds.ok()) return fail(transfer_seconds.status());
  service->set_transfer_observer([h = *transfer_seconds](double seconds) { h->Observe(seconds); });
  // Up before the listening line (a launcher waiting for it can scrape at once); stopped first at exit.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, wf.host, "tandem-prefill-worker");
  if (!metrics_server.ok()) return fail(metrics_server.status());
  const std::string address = net::JoinHostPort(wf.host, bound_port);
  std::cout << "tandem-prefill-worker: " << wf.worker_id << " listening on " << address << " (tp " << w->ranks.size()
            << ", transport " << wf.kv_transport << ")" << std::endl;
  std::unique_ptr<RouterRegistration> registration;
  if (!wf.router.empty()) {
    v1::RegisterRequest r;
    r.set_worker_id(wf.worker_id);
    r.set_role(v1::WORKER_ROLE_PREFILL);
    r.set_address(address);
    registration = std::make_unique<RouterRegistration>(wf.router, r);
  }
  WaitForStopSignal();
  gate.StartDraining();
  SetHealth(server->get(), false);
  if (registration) registration->SetDraining();
  std::cout << "tandem-prefill-worker: draining (up to " << wf.drain_timeout_s << " s)" << std::endl;
  if (!WaitUntilIdle([&gate] { return gate.num_in_flight() == 0; }, std::chrono::seconds(wf.drain_timeout_s))) {
    std::cerr << "tandem-prefill-worker: drain timeout: cancelling what is left\n";
  }
  if (*metrics_server) (*metrics_server)->Stop();  // no scrape reads the engine or transports after this
  registration.reset();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  w->engine->Stop();  // no more steps, so nothing new reaches the sender or the shipper
  sender.reset();     // drains in-flight transfers (their ReleasePrefilled is ignored now)
  w->engine.reset();
  shipper.reset();
  return 0;
}
