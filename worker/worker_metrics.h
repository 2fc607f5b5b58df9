// Worker metrics: what a worker process (and `tandem serve`'s engine)
// exports about its engine and its KV transports. The engine reports plain
// structs (AsyncEngine::Stats(), StepReport); this glue turns them into
// Prometheus families, so the engine never sees a registry:
//   gauges   tandem_num_requests_running, tandem_num_requests_waiting,
//            tandem_kv_cache_usage_ratio, tandem_kv_blocks_used, tandem_kv_blocks_free
//   counters tandem_prefix_cache_queries_total, tandem_prefix_cache_hits_total (tokens),
//            tandem_num_preemptions_total, tandem_engine_steps_total
//   histograms tandem_step_duration_seconds, tandem_batch_size (sequences per step),
//            tandem_request_queue_time_seconds (waiting until first scheduled)
//   transport tandem_kv_transfer_bytes_total, tandem_kv_transfer_puts_total,
//            tandem_kv_transfer_failures_total, tandem_kv_transfer_flush_seconds_total,
//            tandem_kv_puts_refused_total
//            (summed over TP ranks), tandem_kv_transfer_seconds (histogram, one prompt)
// Thread-safety: Export* run once at start (from main); the callbacks they
// register run on the scraping thread, the step listener on the loop thread.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/metrics/registry.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "engine/core/async_engine.h"
#include "kv_transfer/transport.h"

namespace tandem {

// Registers the engine families with `labels` and installs the engine's
// step listener. `queue_time` (may be null: then created here) is the
// tandem_request_queue_time_seconds family when the process already has one
// (`tandem serve`). `engine` must stay alive while the registry is served
// and until its loop stops.
[[nodiscard]] absl::Status ExportEngineMetrics(metrics::Registry* registry, const metrics::Labels& labels,
                                               AsyncEngine* engine,
                                               prometheus::Family<prometheus::Histogram>* queue_time = nullptr);

// tandem_engine_info{<labels>, <info>} 1: the arithmetic the engine runs
// (what --dtype / --kv-cache-dtype "auto" resolved to), as labels.
[[nodiscard]] absl::Status ExportEngineInfo(metrics::Registry* registry, const metrics::Labels& labels,
                                            const std::vector<std::pair<std::string, std::string>>& info);

// Registers the transport families with `labels`, each summed over
// `transports` (one per TP rank; they must stay alive while the registry is
// served). Returns the tandem_kv_transfer_seconds child, which the prefill
// side observes once per prompt it ships.
absl::StatusOr<prometheus::Histogram*> ExportTransportMetrics(metrics::Registry* registry,
                                                              const metrics::Labels& labels,
                                                              std::vector<const KvTransport*> transports);

}  // namespace tandem
