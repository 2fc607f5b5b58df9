// Worker pool metrics (see pool_metrics.h).
#include "router/pool_metrics.h"

namespace tandem {

absl::Status ExportWorkerPoolMetrics(metrics::Registry* registry, const metrics::Labels& labels,
                                     const WorkerPool* pool) {
  // One series per worker: the process's labels plus the worker's id and role.
  auto collect = [labels, pool](bool up) {
    return [labels, pool, up] {
      std::vector<metrics::Sample> out;
      for (const WorkerPool::Health& h : pool->AllHealth()) {
        metrics::Labels l = labels;
        l.emplace("worker", h.id);
        l.emplace("role", h.role == v1::WORKER_ROLE_PREFILL ? "prefill" : "decode");
        out.push_back({std::move(l), up ? (h.up ? 1.0 : 0.0) : static_cast<double>(h.in_flight)});
      }
      return out;
    };
  };
  absl::StatusOr<metrics::CollectorFamily*> up = registry->AddCollectorGauge(
      "tandem_worker_up", "1 when the router routes to the worker (live, not failed lately), else 0.", collect(true));
  if (!up.ok()) return up.status();
  absl::StatusOr<metrics::CollectorFamily*> in_flight = registry->AddCollectorGauge(
      "tandem_worker_requests_in_flight", "Requests the router has on the worker now.", collect(false));
  return in_flight.status();
}

absl::Status ExportRoutingMetrics(metrics::Registry* registry, const metrics::Labels& labels,
                                  const KvRouter* router, const WorkerPool* pool) {
  auto collect = [labels, router](bool hits) {
    return [labels, router, hits] {
      std::vector<metrics::Sample> out;
      for (v1::WorkerRole role : {v1::WORKER_ROLE_PREFILL, v1::WORKER_ROLE_DECODE}) {
        metrics::Labels l = labels;
        l.emplace("role", role == v1::WORKER_ROLE_PREFILL ? "prefill" : "decode");
        l.emplace("routing", RoutingModeName(router->mode()));
        out.push_back({std::move(l), static_cast<double>(hits ? router->cached_blocks(role)
                                                              : router->prompt_blocks(role))});
      }
      return out;
    };
  };
  absl::StatusOr<metrics::CollectorFamily*> routed = registry->AddCollectorCounter(
      "tandem_router_prompt_blocks_total", "Prompt KV blocks routed to workers (a partial last block counts).",
      collect(false));
  if (!routed.ok()) return routed.status();
  absl::StatusOr<metrics::CollectorFamily*> hits = registry->AddCollectorCounter(
      "tandem_router_prefix_hit_blocks_total",
      "Of the prompt blocks routed, those the chosen worker already held by the router's prefix index.",
      collect(true));
  if (!hits.ok()) return hits.status();
  absl::StatusOr<metrics::CollectorFamily*> indexed = registry->AddCollectorGauge(
      "tandem_router_indexed_blocks", "KV blocks the router's prefix index says the worker holds.",
      [labels, router, pool] {
        std::vector<metrics::Sample> out;
        for (const WorkerPool::Health& h : pool->AllHealth()) {
          metrics::Labels l = labels;
          l.emplace("worker", h.id);
          l.emplace("role", h.role == v1::WORKER_ROLE_PREFILL ? "prefill" : "decode");
          out.push_back({std::move(l), static_cast<double>(router->IndexedBlocks(h.role, h.id))});
        }
        return out;
      });
  return indexed.status();
}

}  // namespace tandem
