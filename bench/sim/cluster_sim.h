// A discrete-event simulation of a Tandem cluster: a router in front of
// prefill and decode workers, driven by the router's own code (its
// admission window, router/prefill_window.h, and its worker choice,
// router/kv_router.h, linked, not re-implemented) and by the workers' own
// prefix caches (engine/core/kv_cache_manager.h, one per worker, with their
// KV events reaching the router every heartbeat). What the simulation models
// instead of running it is the time: each engine step lasts what the step
// cost model (step_cost.h, fitted on the real engine) says, the KV transfer
// bytes over a bandwidth, and, when the workers share CPU cores, every busy
// worker's step slows in proportion (processor sharing).
//
// A request's path is the real one: admission window -> Admit on a decode
// worker (its cached prefix reused, blocks for the rest and a promise for
// the output; a full worker sends the request back to the queue) -> Prefill
// on a prefill worker (its cached prefix skipped; chunked by the step
// budget, first come first served) -> the KV shipped (only the blocks the
// decode worker lacks) -> the first token (TTFT) -> one token per decode step
// (continuous batching) until the request's output length.
// Thread-safety: Simulate is a pure function (one simulation per call).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "bench/load/percentiles.h"
#include "bench/sim/step_cost.h"
#include "router/kv_router.h"

namespace tandem::sim {

struct SimRequest {
  double arrival_s = 0;         // when it may be sent (not for a later turn)
  std::vector<int32_t> prompt;  // token ids (prefix sharing is real sharing)
  int64_t output_len = 1;       // tokens generated, the first by the prefill
  // Multi-turn: the index of the conversation's previous turn (-1: none).
  // This request is sent when that one ends, its prompt that turn's prompt,
  // the tokens generated for it, then `prompt` (the new message).
  int64_t previous = -1;
};

struct SimConfig {
  int num_prefill = 1;
  int num_decode = 1;
  StepCostModel prefill_cost;
  StepCostModel decode_cost;
  int64_t max_num_batched_tokens = 256;  // the engines' step budget (tandem's default)
  int max_num_seqs = 64;
  int32_t block_size = 16;
  int64_t prefill_kv_blocks = 2048;
  int64_t decode_kv_blocks = 2048;
  double kv_bytes_per_block = 0;         // one block's K and V over every layer
  double transfer_bytes_per_s = 2e9;     // prefill -> decode
  double transfer_latency_s = 0.0005;
  // Workers sharing this many CPU cores, each stepping with
  // threads_per_worker threads (0: every worker has cores of its own).
  int shared_cores = 0;
  int threads_per_worker = 2;
  // Oversubscribed (more threads stepping than cores), each busy worker
  // runs at this fraction of its fair share. 1 with a calibration timed
  // under the shared-core OpenMP waiting (calibrate --workers-share-cores)
  // predicted best here; below 1 models teams that lose a core mid-step and
  // wait at their barriers (docs/routing.md has both validations).
  double sharing_efficiency = 1.0;
  KvRoutingOptions routing;
  int64_t window_tokens_per_worker = 8192;  // --max-prefill-tokens-per-worker
  bool decode_prefix_reuse = true;
  double heartbeat_s = 2.0;                 // KV events reach the router this often
  // Requests in flight at most (as tandem-bench --concurrency: one that
  // arrives with no slot free waits for one); 0: no cap.
  int64_t concurrency = 0;
};

struct SimRequestResult {
  bool completed = false;
  double start_s = 0;   // sent (its arrival, a free slot under a cap, or its previous turn's end)
  int64_t prompt_tokens = 0;  // as sent (a later turn: the conversation so far and its message)
  double ttft_s = 0;
  double tpot_s = 0;    // mean time per output token after the first (0 with one token)
  double e2e_s = 0;
  int64_t prefill_cached_tokens = 0;  // prompt tokens the prefill worker's cache held
  int64_t shipped_blocks = 0;         // KV blocks sent to the decode worker
};

// Steps one role's workers took, and their wall time in all (what the real
// workers' tandem_step_duration_seconds histogram sums): the cost model's
// with cores of their own, stretched by sharing on shared cores.
struct RoleSteps {
  int64_t count = 0;
  double seconds = 0;
};

struct SimResult {
  std::vector<SimRequestResult> requests;
  double duration_s = 0;  // 0 to the last completion
  int64_t output_tokens = 0;
  RoleSteps prefill_steps, decode_steps;
};

SimResult Simulate(const SimConfig& config, const std::vector<SimRequest>& requests);

// Service-level objectives: a good request's TTFT and TPOT are at most these.
struct Slo {
  double ttft_ms = std::numeric_limits<double>::infinity();
  double tpot_ms = std::numeric_limits<double>::infinity();
};

struct SimSummary {
  int64_t completed = 0;
  bench::LatencySummary ttft_ms, tpot_ms, e2e_ms;
  double output_tok_s = 0;
  double request_s = 0;
  int64_t good = 0;        // completed within the SLO
  double goodput = 0;      // good requests per second
  double attainment = 0;   // good / requests
};

SimSummary Summarize(const SimResult& result, const Slo& slo);

}  // namespace tandem::sim
