// The router's view of its workers as metrics, one series per worker the
// pool knows (workers come and go, so these are collected at each scrape):
//   tandem_worker_up{worker,role}                 1 live and not marked failed, else 0
//   tandem_worker_requests_in_flight{worker,role} the router's requests on it
// and of the routing choice (router/kv_router.h), per role:
//   tandem_router_prompt_blocks_total{role,routing}         prompt KV blocks routed
//   tandem_router_prefix_hit_blocks_total{role,routing}     of those, blocks the chosen worker held (by the
//                                                           router's index: a prediction, the worker's own
//                                                           tandem_prefix_cache_* metrics count real hits)
//   tandem_router_indexed_blocks{worker,role}                KV blocks the router's prefix index says the
//                                                           worker holds (its KV events and the routing)
// Thread-safety: Export runs once at start; the collectors run on the
// scraping thread and take the pool's lock briefly.
#pragma once

#include "absl/status/status.h"
#include "common/metrics/registry.h"
#include "router/kv_router.h"
#include "router/worker_pool.h"

namespace tandem {

// `labels` (the process's, e.g. model) go on every series beside worker and
// role. `pool` must stay alive while the registry is served.
[[nodiscard]] absl::Status ExportWorkerPoolMetrics(metrics::Registry* registry, const metrics::Labels& labels,
                                                   const WorkerPool* pool);

}  // namespace tandem

namespace tandem {

// `router` and `pool` must stay alive while the registry is served.
[[nodiscard]] absl::Status ExportRoutingMetrics(metrics::Registry* registry, const metrics::Labels& labels,
                                                const KvRouter* router, const WorkerPool* pool);

}  // namespace tandem
