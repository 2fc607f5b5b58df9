// WorkerMain: the life of a worker process, the same for both roles. It
// parses the shared worker flags (worker/worker_flags.h) and the role's own,
// loads the model as TP ranks, registers every rank's KV pool with a KV
// transport, lets the role build its gRPC service, serves it with health and
// metrics, registers with the router (heartbeats), and on SIGINT/SIGTERM
// drains: health NOT_SERVING, a draining registration, new work refused by
// the DrainGate, work in flight finished (up to --drain-timeout-s); exit 0.
//
// A role (prefill_worker/, decode_worker/) supplies only what differs: its
// flags, its service and what that service needs, what "idle" means, and
// what must stop before the engine goes.
// Thread-safety: WorkerMain runs on the main thread; the role's methods are
// called from it, in the order declared below.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/cli/cli_flags.h"
#include "common/drain_gate.h"
#include "common/grpc/cluster_tls.h"
#include "prometheus/histogram.h"
#include "tandem/v1/worker.pb.h"
#include "worker/worker_flags.h"
#include "worker/worker_model.h"

namespace grpc {
class Service;
}

namespace tandem {

// What WorkerMain built before the role's service. All of it outlives the
// role's service and everything Start() made.
struct WorkerParts {
  const cli::WorkerFlags* flags = nullptr;
  WorkerModel* model = nullptr;
  RankTransports* kv = nullptr;  // one transport per TP rank, with the rank's pool registered
  DrainGate* gate = nullptr;     // the service must Enter() it for each piece of work
  // mTLS inside the cluster (or plaintext): the service checks its callers' roles with it.
  std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure();
};

class WorkerRole {
 public:
  virtual ~WorkerRole() = default;

  virtual v1::WorkerRole role() const = 0;
  // "prefill" or "decode": the program is tandem-<name>-worker, default ids <name>-<port>.
  virtual std::string name() const = 0;
  // The role service's full gRPC name: its health status stays SERVING while
  // the process lives (a liveness probe); "" goes NOT_SERVING on drain.
  virtual std::string service_name() const = 0;

  // The role's own flags, and their check once parsed (InvalidArgument
  // naming the flag).
  virtual void RegisterFlags(cli::FlagSet& flags) = 0;
  virtual absl::Status CheckFlags() const { return absl::OkStatus(); }
  // How long the engine keeps a released, never-activated reservation's
  // blocks (AsyncEngine's release_grace).
  virtual std::chrono::milliseconds release_grace() const { return std::chrono::milliseconds(0); }

  // Builds the role's service over `parts` (owned by the role).
  virtual absl::StatusOr<grpc::Service*> Start(const WorkerParts& parts) = 0;
  // The server is bound: the worker's id is final, and the per-prompt KV
  // transfer histogram exists.
  virtual void Started(const std::string& worker_id, prometheus::Histogram* transfer_seconds) = 0;
  // Words for the listening line after the TP size, e.g. ", kv 96 blocks per rank".
  virtual std::string Describe(const WorkerParts& parts) const { return ""; }
  // Whether the role has nothing in flight beyond the gate's tickets (the drain waits for both).
  virtual bool Idle(const WorkerParts& parts) const { return true; }
  // The server has stopped: stop what feeds on the engine before it is destroyed.
  virtual void Stop(const WorkerParts& parts) {}
};

// The whole process; returns its exit code (0, 1 on a start-up failure, 2 on
// a usage error).
int WorkerMain(int argc, char** argv, WorkerRole& role);

}  // namespace tandem
