// Worker metrics (see worker_metrics.h).
#include "worker/worker_metrics.h"

#include <array>
#include <functional>

#include "common/metrics/buckets.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

using metrics::Labels;

absl::Status AddCallback(absl::StatusOr<metrics::CallbackFamily*> family, const Labels& labels,
                         std::function<double()> fn) {
  if (!family.ok()) return family.status();
  return (*family)->Add(labels, std::move(fn));
}

// Steps are as fast as a decode token or as slow as a long prompt chunk.
constexpr std::array<double, 19> kStepBucketsSeconds = metrics::kItlBucketsSeconds;
// Sequences per step: 1 .. 1024, powers of 2.
constexpr std::array<double, 11> kBatchSizeBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

}  // namespace

absl::Status ExportEngineInfo(metrics::Registry* registry, const Labels& labels,
                              const std::vector<std::pair<std::string, std::string>>& info) {
  ASSIGN_OR_RETURN(prometheus::Family<prometheus::Gauge>* family,
                   registry->AddGauge("tandem_engine_info",
                                      "Always 1; its labels say the engine's arithmetic: dtype, kv_cache_dtype, "
                                      "cpu_isa, quantization."));
  Labels all = labels;
  for (const auto& [key, value] : info) all[key] = value;
  ASSIGN_OR_RETURN(prometheus::Gauge* gauge, metrics::AddChild(family, all));
  gauge->Set(1);
  return absl::OkStatus();
}

absl::Status ExportEngineMetrics(metrics::Registry* registry, const Labels& labels, AsyncEngine* engine,
                                 prometheus::Family<prometheus::Histogram>* queue_time) {
  metrics::Registry& r = *registry;
  // Each scrape reads one snapshot per callback; Stats() is a copy under a short lock.
  auto stat = [engine](auto field) { return [engine, field] { return static_cast<double>(field(engine->Stats())); }; };
  RETURN_IF_ERROR(AddCallback(r.AddCallbackGauge("tandem_num_requests_running", "Requests in the engine's running batch."),
                              labels, stat([](const EngineStats& s) { return s.num_running; })));
  RETURN_IF_ERROR(AddCallback(r.AddCallbackGauge("tandem_num_requests_waiting", "Requests waiting to be scheduled."),
                              labels, stat([](const EngineStats& s) { return s.num_waiting; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackGauge("tandem_kv_cache_usage_ratio", "Fraction of KV cache blocks in use (0 to 1)."), labels,
      [engine] {
        const EngineStats s = engine->Stats();
        return s.kv.num_blocks > 0 ? static_cast<double>(s.kv.num_used_blocks) / s.kv.num_blocks : 0.0;
      }));
  RETURN_IF_ERROR(AddCallback(r.AddCallbackGauge("tandem_kv_blocks_used", "KV cache blocks in use."), labels,
                              stat([](const EngineStats& s) { return s.kv.num_used_blocks; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackGauge("tandem_kv_blocks_free", "KV cache blocks free (evictable cached blocks included)."), labels,
      stat([](const EngineStats& s) { return s.kv.num_free_blocks; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackGauge("tandem_kv_blocks_cached", "KV cache blocks holding a prefix-cache entry (used or free)."),
      labels, stat([](const EngineStats& s) { return s.kv.num_cached_blocks; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache."), labels,
      stat([](const EngineStats& s) { return s.kv.prefix_queries_tokens; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_prefix_cache_hits_total", "Prompt tokens found in the prefix cache."), labels,
      stat([](const EngineStats& s) { return s.kv.prefix_hits_tokens; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_num_preemptions_total", "Sequences preempted (to be recomputed) for lack of blocks."),
      labels, stat([](const EngineStats& s) { return s.num_preemptions; })));
  RETURN_IF_ERROR(AddCallback(r.AddCallbackCounter("tandem_engine_steps_total", "Engine steps run."), labels,
                              stat([](const EngineStats& s) { return s.num_steps; })));

  ASSIGN_OR_RETURN(prometheus::Family<prometheus::Histogram>* step_family,
                   r.AddHistogram("tandem_step_duration_seconds", "Wall time of one engine step."));
  ASSIGN_OR_RETURN(prometheus::Histogram* step,
                   metrics::AddChild(step_family, labels, metrics::Buckets(kStepBucketsSeconds)));
  ASSIGN_OR_RETURN(prometheus::Family<prometheus::Histogram>* batch_family,
                   r.AddHistogram("tandem_batch_size", "Sequences computed per engine step."));
  ASSIGN_OR_RETURN(prometheus::Histogram* batch,
                   metrics::AddChild(batch_family, labels, metrics::Buckets(kBatchSizeBuckets)));
  if (queue_time == nullptr) {
    ASSIGN_OR_RETURN(queue_time, r.AddHistogram("tandem_request_queue_time_seconds",
                                                "Time a request waited for capacity (router: for a decode "
                                                "reservation; engine: to be scheduled)."));
  }
  ASSIGN_OR_RETURN(prometheus::Histogram* queue,
                   metrics::AddChild(queue_time, labels, metrics::Buckets(metrics::kQueueTimeBucketsSeconds)));
  // Observed on the loop thread; each Observe holds only that histogram's own mutex, which a
  // scrape holds just long enough to copy the bucket counts.
  engine->SetStepListener([step, batch, queue](const StepReport& report) {
    step->Observe(report.seconds);
    batch->Observe(report.num_seqs);
    for (double q : report.queue_seconds) queue->Observe(q);
  });
  return absl::OkStatus();
}

absl::StatusOr<prometheus::Histogram*> ExportTransportMetrics(metrics::Registry* registry, const Labels& labels,
                                                           std::vector<const KvTransport*> transports) {
  metrics::Registry& r = *registry;
  // One number over every rank's transport (a TP worker has one per rank).
  auto sum = [transports](auto field) {
    return [transports, field] {
      double total = 0;
      for (const KvTransport* t : transports) total += static_cast<double>(field(t->stats()));
      return total;
    };
  };
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_kv_transfer_bytes_total", "KV bytes this worker put to other workers."), labels,
      sum([](const TransportStats& s) { return s.bytes_put_total; })));
  RETURN_IF_ERROR(AddCallback(r.AddCallbackCounter("tandem_kv_transfer_puts_total", "KV puts posted."), labels,
                              sum([](const TransportStats& s) { return s.puts_total; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_kv_transfer_failures_total", "KV transport calls (connect, put, flush) that failed."),
      labels, sum([](const TransportStats& s) { return s.failures_total; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_kv_transfer_flush_seconds_total", "Time spent waiting for KV flushes."), labels,
      sum([](const TransportStats& s) { return static_cast<double>(s.flush_ns_total) / 1e9; })));
  RETURN_IF_ERROR(AddCallback(
      r.AddCallbackCounter("tandem_kv_puts_refused_total",
                           "KV puts from other workers this worker refused: outside its pool, or into blocks not "
                           "reserved under the put's token (late puts of ended reservations, or forged ones)."),
      labels, sum([](const TransportStats& s) { return s.puts_refused_total; })));
  ASSIGN_OR_RETURN(prometheus::Family<prometheus::Histogram>* family,
                   r.AddHistogram("tandem_kv_transfer_seconds",
                                  "Per shipped prompt: from its first token being sampled to its KV being flushed "
                                  "at the decode worker (the transfer time not hidden behind compute)."));
  return metrics::AddChild(family, labels, metrics::Buckets(metrics::kKvTransferBucketsSeconds));
}

}  // namespace tandem
