#include "worker/worker_stats.h"

namespace tandem {

void FillWorkerStats(const EngineStats& s, v1::WorkerStats* out) {
  out->set_num_running(static_cast<uint32_t>(s.num_running));
  out->set_num_waiting(static_cast<uint32_t>(s.num_waiting));
  out->set_kv_blocks_total(static_cast<uint32_t>(s.kv.num_blocks));
  out->set_kv_blocks_used(static_cast<uint32_t>(s.kv.num_used_blocks));
  out->set_kv_blocks_free(static_cast<uint32_t>(s.kv.num_free_blocks));
  out->set_kv_blocks_cached(static_cast<uint32_t>(s.kv.num_cached_blocks));
  out->set_prefix_cache_queries_tokens(static_cast<uint64_t>(s.kv.prefix_queries_tokens));
  out->set_prefix_cache_hits_tokens(static_cast<uint64_t>(s.kv.prefix_hits_tokens));
  out->set_num_preemptions(static_cast<uint64_t>(s.num_preemptions));
  out->set_num_reservations(static_cast<uint32_t>(s.num_awaiting_kv));
}

}  // namespace tandem
