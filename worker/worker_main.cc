#include "worker/worker_main.h"

#include <iostream>
#include <random>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/cli/model_path.h"
#include "common/grpc/server.h"
#include "common/metrics/metrics_setup.h"
#include "common/net/host_port.h"
#include "common/process/stop_signals.h"
#include "grpcpp/grpcpp.h"
#include "worker/router_registration.h"
#include "worker/worker_metrics.h"

namespace tandem {

int WorkerMain(int argc, char** argv, WorkerRole& role) {
  process::BlockStopSignals();
  const std::string program = absl::StrCat("tandem-", role.name(), "-worker");
  cli::FlagSet flags;
  cli::WorkerFlags wf;
  cli::MetricsFlag metrics_flag;
  wf.Register(flags, role.name());
  metrics_flag.Register(flags);
  role.RegisterFlags(flags);
  absl::Status parsed = flags.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.ok() || wf.help) {
    (parsed.ok() ? std::cout : std::cerr) << (parsed.ok() ? "" : std::string(parsed.message()) + "\n")
                                          << "usage: " << program << " [flags]\n" << flags.Usage();
    return parsed.ok() ? 0 : 2;
  }
  if (absl::Status st = metrics_flag.Parse().status(); !st.ok()) {
    std::cerr << program << ": " << st.message() << "\n";
    return 2;
  }
  auto fail = [&program](const absl::Status& st) {
    std::cerr << program << ": " << st << "\n";
    return 1;
  };
  if (wf.tp < 1 || wf.tp > 64) return fail(absl::InvalidArgumentError("--tp must be in [1, 64]"));
  if (wf.drain_timeout_s < 0) return fail(absl::InvalidArgumentError("--drain-timeout-s must be >= 0"));
  if (absl::Status st = role.CheckFlags(); !st.ok()) return fail(st);
  const tls::ClusterRole own_role =
      role.role() == v1::WORKER_ROLE_PREFILL ? tls::ClusterRole::kPrefillWorker : tls::ClusterRole::kDecodeWorker;
  absl::StatusOr<std::shared_ptr<const ClusterTls>> cluster_tls = wf.cluster_tls.Load(own_role, program);
  if (!cluster_tls.ok()) {
    std::cerr << program << ": " << cluster_tls.status().message() << "\n";
    return 2;
  }
  const std::filesystem::path model_dir = wf.model.empty() ? cli::DefaultModelDir() : std::filesystem::path(wf.model);
  absl::StatusOr<EngineConfig> config = wf.engine.ToConfig(std::random_device{}(), model_dir);
  if (!config.ok()) return fail(config.status());
  // The prefix cache's changes, sent to the routers with each heartbeat (cache-aware routing).
  auto kv_events = std::make_shared<KvEventLog>();
  config->kv_event_log = kv_events;

  // Outlives the engine and the transports: the step listener observes into it until the loop stops.
  metrics::Registry metrics_registry;
  absl::StatusOr<WorkerModel> model =
      LoadWorkerModel(model_dir.string(), *config, static_cast<int>(wf.tp), role.release_grace());
  if (!model.ok()) return fail(model.status());
  absl::StatusOr<RankTransports> kv = RegisterRankPools(wf.kv_transport, *model);
  if (!kv.ok()) return fail(kv.status());
  DrainGate gate;  // outlives the server: its tickets live in the server's calls
  const WorkerParts parts{&wf, &*model, &*kv, &gate, *cluster_tls};
  // On every way out: the role's feeders stop, then the engine's loop, before
  // the transports and the role's objects go.
  absl::Cleanup stop_engine = [&] {
    role.Stop(parts);
    model->engine.reset();
  };

  absl::StatusOr<grpc::Service*> service = role.Start(parts);
  if (!service.ok()) return fail(service.status());
  int bound_port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartGrpcServer(net::JoinHostPort(wf.host, wf.port), {*service}, &bound_port, /*serving=*/true,
                      (*cluster_tls)->ServerCredentials());
  if (!server.ok()) return fail(server.status());
  (*server)->GetHealthCheckService()->SetServingStatus(role.service_name(), true);
  if (wf.worker_id.empty()) wf.worker_id = absl::StrCat(role.name(), "-", bound_port);

  const metrics::Labels metric_labels = {
      {"model", cli::ModelLabel(model_dir)}, {"worker", wf.worker_id}, {"role", role.name()}};
  if (absl::Status st = ExportEngineMetrics(&metrics_registry, metric_labels, model->engine.get()); !st.ok()) {
    return fail(st);
  }
  if (absl::Status st = ExportEngineInfo(&metrics_registry, metric_labels, cli::EngineArithmeticLabels(*config));
      !st.ok()) {
    return fail(st);
  }
  std::vector<const KvTransport*> rank_transports;
  for (const auto& t : kv->transports) rank_transports.push_back(t.get());
  absl::StatusOr<prometheus::Histogram*> transfer_seconds =
      ExportTransportMetrics(&metrics_registry, metric_labels, std::move(rank_transports));
  if (!transfer_seconds.ok()) return fail(transfer_seconds.status());
  role.Started(wf.worker_id, *transfer_seconds);
  // Up before the listening line (a launcher waiting for it can scrape at once); stopped first at exit.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      cli::StartMetricsServer(&metrics_registry, metrics_flag, wf.host, program);
  if (!metrics_server.ok()) return fail(metrics_server.status());
  const std::string address = net::JoinHostPort(wf.host, bound_port);
  std::cout << program << ": " << wf.worker_id << " listening on " << address << " (tp " << model->ranks.size()
            << role.Describe(parts) << ", transport " << wf.kv_transport << ", "
            << ((*cluster_tls)->secure() ? "mTLS" : "PLAINTEXT: --insecure-cluster") << "; "
            << cli::DescribeEngineArithmetic(*config) << ")" << std::endl;
  // One registration per router: replicas behind one address all route to us.
  std::vector<std::unique_ptr<RouterRegistration>> registrations;
  // One per process start: routers tell this process from an earlier one
  // with the same id (and maybe the same address) that held reservations.
  const std::string incarnation = NewWorkerIncarnation();
  for (absl::string_view router : absl::StrSplit(wf.router, ',', absl::SkipWhitespace())) {
    v1::RegisterRequest r;
    r.set_worker_id(wf.worker_id);
    r.set_role(role.role());
    r.set_address(address);
    r.set_incarnation(incarnation);
    r.set_kv_block_size(static_cast<uint32_t>(config->block_size));
    registrations.push_back(
        std::make_unique<RouterRegistration>(std::string(absl::StripAsciiWhitespace(router)), r, *cluster_tls,
                                             kv_events));
  }

  process::WaitForStopSignal();
  gate.StartDraining();
  SetHealth(server->get(), false);
  {
    // Every router hears of the drain at once (each call is bounded by a few seconds).
    std::vector<std::thread> tell;
    for (auto& reg : registrations) tell.emplace_back([r = reg.get()] { r->SetDraining(); });
    for (std::thread& t : tell) t.join();
  }
  std::cout << program << ": draining (up to " << wf.drain_timeout_s << " s)" << std::endl;
  auto idle = [&] { return gate.num_in_flight() == 0 && role.Idle(parts); };
  if (!process::WaitUntilIdle(idle, std::chrono::seconds(wf.drain_timeout_s))) {
    std::cerr << program << ": drain timeout: cancelling what is left\n";
  }
  if (*metrics_server) (*metrics_server)->Stop();  // no scrape reads the engine or transports after this
  registrations.clear();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;  // stop_engine runs here, after the server is down
}

}  // namespace tandem
