// The router's flags: where it listens (RouterListenFlags: the public API
// and the control plane apart) and its tuning (admission, leases, migration,
// timeouts, the drain, and how workers are chosen). tandem-router parses both; `tandem up` accepts the
// same tuning flags and passes those given on its command line to the router
// it starts (it picks the listeners itself).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "common/cli/cli_flags.h"
#include "router/cluster_backend.h"

namespace tandem::cli {

// The router's two listeners. The public one (--host/--port) serves only
// Generation, health and reflection: what clients may call. The cluster one
// (--cluster-host/--cluster-port) serves the control plane, WorkerRegistry
// (Register, ListWorkers), with its own health and reflection: only workers
// and launchers on the internal network may reach it, since whoever
// registers there receives users' prompts and decode workers' KV
// descriptors (docs/architecture.md, "The router's two listeners").
struct RouterListenFlags {
  std::string host = "127.0.0.1";
  int64_t port = 50051;
  std::string cluster_host;  // empty: --host
  int64_t cluster_port = 50052;

  void Register(FlagSet& f);
  // InvalidArgument naming the flag: a port outside [0, 65535], or
  // --cluster-port equal to --port (allowed only when both are 0: two free ports).
  absl::Status Validate() const;
  // The cluster listener's host: --cluster-host, or --host when not given.
  const std::string& ClusterHost() const { return cluster_host.empty() ? host : cluster_host; }
};

struct RouterTuningFlags {
  int64_t max_queued = 1024;
  int64_t max_queued_tokens = int64_t{1} << 20;
  int64_t max_prefill_tokens_per_worker = 8192;
  int64_t prefill_timeout_ms = 120000;
  int64_t max_migrations = 3;
  int64_t migration_patience_ms = 30000;
  int64_t decode_idle_timeout_ms = 30000;
  int64_t lease_renew_ms = 1000;
  int64_t drain_timeout_s = 30;
  std::string routing = "kv-aware";
  std::optional<float> kv_overlap_weight;  // unset: KvRoutingOptions' default
  int64_t prefix_index_blocks = 131072;

  void Register(FlagSet& f);
  // InvalidArgument naming the flag and its range.
  absl::Status Validate() const;
  // Sets the ClusterBackend options these flags decide.
  void Apply(ClusterOptions* o) const;
};

}  // namespace tandem::cli
