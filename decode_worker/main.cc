// build/bin/tandem-decode-worker: a decode worker process (thin main over
// decode_worker/): reserves KV blocks for the router, receives prompts' KV
// from prefill workers over the KV transport, streams decoded tokens.
// SIGTERM drains: the router is told (draining registration) and new Admits
// get UNAVAILABLE; admitted requests decode to the end (up to
// --drain-timeout-s); then exit 0.
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/drain_gate.h"
#include "common/grpc/server.h"
#include "common/net/host_port.h"
#include "decode_worker/decode_service.h"
#include "decode_worker/worker_runtime.h"
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
  int64_t reservation_timeout_ms = 30000, release_grace_ms = 2000;
  cli::MetricsFlag metrics_flag;
  wf.Register(flags, "decode");
  metrics_flag.Register(flags);
  flags.AddInt("reservation-timeout-ms", &reservation_timeout_ms, "free reservations not activated in time");
  flags.AddInt("release-grace-ms", &release_grace_ms,
               "keep a released, never-activated reservation's blocks this long (late KV puts land there)");
  if (absl::Status st = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !st.ok() || wf.help) {
    (st.ok() ? std::cout : std::cerr) << (st.ok() ? "" : std::string(st.message()) + "\n")
                                      << "usage: tandem-decode-worker [flags]\n" << flags.Usage();
    return st.ok() ? 0 : 2;
  }
  auto fail = [](const absl::Status& st) {
    std::cerr << "tandem-decode-worker: " << st << "\n";
    return 1;
  };
  if (absl::Status st = metrics_flag.Parse().status(); !st.ok()) {
    std::cerr << "tandem-decode-worker: " << st.message() << "\n";
    return 2;
  }
  // Outlives the engine and the transports: the step listener observes into it until the loop stops.
  metrics::Registry metrics_registry;
  absl::StatusOr<EngineConfig> config = wf.engine.ToConfig(std::random_device{}());
  if (!config.ok()) return fail(config.status());
  if (wf.tp < 1 || wf.tp > 64) return fail(absl::InvalidArgumentError("--tp must be in [1, 64]"));
  if (wf.drain_timeout_s < 0) {
    return fail(absl::InvalidArgumentError("--drain-timeout-s must be >= 0"));
  }
  absl::StatusOr<WorkerModel> w = LoadWorkerModel(wf.model.empty() ? cli::DefaultModelDir().string() : wf.model, *config,
                                                  static_cast<int>(wf.tp), std::chrono::milliseconds(release_grace_ms));
  if (!w.ok()) return fail(w.status());
  absl::StatusOr<RankTransports> kv = RegisterRankPools(wf.kv_transport, *w);
  if (!kv.ok()) return fail(kv.status());
  std::vector<v1::KvRankRegion> regions;
  for (size_t r = 0; r < w->ranks.size(); ++r) {
    v1::KvRankRegion& region = regions.emplace_back();
    region.set_memory_descriptor(kv->descriptors[r].Serialize());
    *region.mutable_layout() = RankKvLayout(*w, static_cast<int>(r));
  }

  DecodeServiceOptions options;
  options.reservation_timeout = std::chrono::milliseconds(reservation_timeout_ms);
  options.transport_name = wf.kv_transport;
  // The id needs the port; the service is built after the server picks it,
  // so register a placeholder-free service by binding first.
  int bound_port = 0;
  DrainGate gate;  // outlives the server: its tickets live in the server's calls
  auto service = std::make_unique<DecodeService>(w->engine.get(), std::move(regions), options, &gate);
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(net::JoinHostPort(wf.host, wf.port), {service.get()}, &bound_port);
  if (!server.ok()) return fail(server.status());
  // SERVING for as long as the process runs (liveness); "" (readiness) goes
  // NOT_SERVING when the drain starts.
  (*server)->GetHealthCheckService()->SetServingStatus(v1::DecodeWorker::service_full_name(), true);
  if (wf.worker_id.empty()) wf.worker_id = absl::StrCat("decode-", bound_port);
  service->set_worker_id(wf.worker_id);
  const metrics::Labels metric_labels = {{"model", cli::ModelLabel(wf.model.empty() ? cli::DefaultModelDir() : std::filesystem::path(wf.model))},
                                         {"worker", wf.worker_id}, {"role", "decode"}};
  if (absl::Status st = ExportEngineMetrics(&metrics_registry, metric_labels, w->engine.get()); !st.ok()) return fail(st);
  std::vector<const KvTransport*> rank_transports;
  for (const auto& t : kv->transports) rank_transports.push_back(t.get());
  absl::StatusOr<prometheus::Histogram*> transfer_seconds =
      ExportTransportMetrics(&metrics_registry, metric_labels, std::move(rank_transports));
  if (!transfer_seconds.ok()) return fail(transfer_seconds.status());
  // Up before the listening line (a launcher waiting for it can scrape at once); stopped first at exit.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, wf.host, "tandem-decode-worker");
  if (!metrics_server.ok()) return fail(metrics_server.status());
  const std::string address = net::JoinHostPort(wf.host, bound_port);
  std::cout << "tandem-decode-worker: " << wf.worker_id << " listening on " << address << " (tp " << w->ranks.size() << ", kv "
            << w->ranks[0].shape.num_blocks << " blocks per rank, transport " << wf.kv_transport << ")" << std::endl;
  std::unique_ptr<RouterRegistration> registration;
  if (!wf.router.empty()) {
    v1::RegisterRequest r;
    r.set_worker_id(wf.worker_id);
    r.set_role(v1::WORKER_ROLE_DECODE);
    r.set_address(address);
    registration = std::make_unique<RouterRegistration>(wf.router, r);
  }
  WaitForStopSignal();
  gate.StartDraining();
  SetHealth(server->get(), false);
  if (registration) registration->SetDraining();
  AsyncEngine* engine = w->engine.get();
  auto idle = [&gate, engine] {
    const EngineStats s = engine->Stats();  // reservations awaiting KV are requests in flight too
    return gate.num_in_flight() == 0 && s.num_running + s.num_waiting + s.num_awaiting_kv == 0;
  };
  std::cout << "tandem-decode-worker: draining (up to " << wf.drain_timeout_s << " s)" << std::endl;
  if (!WaitUntilIdle(idle, std::chrono::seconds(wf.drain_timeout_s))) {
    std::cerr << "tandem-decode-worker: drain timeout: cancelling what is left\n";
  }
  if (*metrics_server) (*metrics_server)->Stop();  // no scrape reads the engine or transports after this
  registration.reset();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  w->engine.reset();  // stop the loop before the transport and service go
  return 0;
}
