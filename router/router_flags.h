// The router's tuning flags: admission, leases, migration, timeouts and the
// drain. tandem-router parses them; `tandem up` accepts the same ones and
// passes those given on its command line to the router it starts.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/cli/cli_flags.h"
#include "router/cluster_backend.h"

namespace tandem::cli {

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

  void Register(FlagSet& f);
  // InvalidArgument naming the flag and its range.
  absl::Status Validate() const;
  // Sets the ClusterBackend options these flags decide.
  void Apply(ClusterOptions* o) const;
};

}  // namespace tandem::cli
