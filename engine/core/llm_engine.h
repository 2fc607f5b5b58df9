// LlmEngine: the engine API both worker roles call. It owns one model
// replica's KV cache, block manager, scheduler and sequences, and advances
// them one step at a time. Free of gRPC and UCX.
//
// Step protocol: Step() = Schedule → ModelRunner (forward + sample) → advance
// each scheduled sequence's computed tokens → commit full blocks to the prefix
// cache → append sampled tokens → finish sequences (eos, stop ids, length) and
// free their blocks. Text-level stopping (stop strings) is the caller's: it
// calls Finish() before the next Step(), so no extra token is generated.
//
// Disaggregation halves:
//  - prefill side: AddRequest with prefill_only=true; the step that samples
//    the first token leaves the sequence kPrefilled with its blocks held
//    (PrefilledBlocks) until ReleasePrefilled().
//  - decode side: ReserveExternal() registers a sequence and reserves blocks
//    for its prompt (kAwaitingKv, never scheduled); once the KV is written,
//    ActivateExternal(first_token) makes it a running sequence.
//
// Thread-safety: not thread-safe; one loop thread owns the engine (STYLE.md 3).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/kv_event_log.h"
#include "engine/core/model_executor.h"
#include "engine/core/model_runner.h"
#include "engine/core/scheduler.h"
#include "engine/core/sequence.h"
#include "engine/model/llama_model.h"

namespace tandem {

struct EngineConfig {
  SchedulerConfig scheduler;
  int32_t block_size = 16;
  // Pool size: num_kv_blocks when > 0, else as many blocks as
  // kv_cache_memory_bytes holds.
  int64_t num_kv_blocks = 0;
  int64_t kv_cache_memory_bytes = int64_t{1} << 30;
  // fp32, bf16, fp16, int8 (kI8) or fp8 (kF8E4M3); engine/model/kv_cache.h.
  DType kv_dtype = DType::kF32;
  // The model's matmul arithmetic; read by whoever loads the model
  // (LoadExecutor), carried here so one flag set configures both.
  kernels::MatMulPrecision precision = kernels::MatMulPrecision::kF32;
  // The weight quantization at load, carried like `precision`.
  QuantizationConfig quantization;
  bool enable_prefix_caching = true;
  uint64_t seed = 0;  // seeds requests that carry none (request i gets seed + i)
  // Where the prefix cache's changes are recorded for routers (a worker's
  // KV events; null: nowhere).
  std::shared_ptr<KvEventLog> kv_event_log;

  [[nodiscard]] absl::Status Validate() const;
};

struct EngineRequest {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  int32_t priority = 0;       // lower first (priority policy)
  bool prefill_only = false;  // stop after the first token, keep the blocks
  // ReserveExternal only (token-replay migration): output already streamed
  // elsewhere. All but the last join the sequence as computed output (their
  // KV is written from outside with the prompt's); ActivateExternal's first
  // token is then the last of them.
  std::vector<int32_t> replayed_token_ids;
  // ReserveExternal only: reuse the context's leading blocks found in the
  // prefix cache (their KV need not come from outside); the blocks returned
  // are then only those after them.
  bool reuse_cached_prefix = false;
};

// What one step produced for one request.
struct RequestOutput {
  std::string request_id;
  std::vector<int32_t> new_token_ids;   // this step's tokens (0 or 1)
  std::vector<SampledToken> new_samples;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
};

struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_awaiting_kv = 0;
  int32_t num_prefilled = 0;
  KvCacheStats kv;
  int64_t num_preemptions = 0;
  int64_t num_steps = 0;
  int64_t last_step_num_tokens = 0;
  int32_t last_step_num_seqs = 0;
};

// Watches steps as they run: which sequences a step computes, then each
// layer's K/V as it lands (the prefill worker ships KV layer by layer).
class StepObserver : public LayerKvListener {
 public:
  // Before the forward pass. `kv` gives the block tables of `plan`'s sequences.
  virtual void OnStepPlanned(const SchedulerOutput& plan, const KvCacheManager& kv) = 0;
};

class LlmEngine {
 public:
  static absl::StatusOr<std::unique_ptr<LlmEngine>> Create(std::unique_ptr<LlamaModel> model,
                                                           const EngineConfig& config);
  // With a tensor-parallel (or any) executor: every rank gets a cache of the
  // same number of blocks.
  static absl::StatusOr<std::unique_ptr<LlmEngine>> Create(std::unique_ptr<ModelExecutor> model,
                                                           const EngineConfig& config);
  LlmEngine(const LlmEngine&) = delete;
  LlmEngine& operator=(const LlmEngine&) = delete;

  // Runs one throwaway forward step of a full step budget (capped by the
  // context length and the pool) before any request, so the first real
  // requests do not pay for what a process does once: paging in the
  // memory-mapped weights, growing the kernels' scratch, starting the OpenMP
  // team (measured: the first 2 x 256-token prompts after start took 0.95 s
  // to their first token, later ones 0.55 s). It writes KV into the pool's
  // first blocks, which no request owns yet and any request overwrites
  // before reading; no counter, block or sequence changes. Call before the
  // first AddRequest / ReserveExternal, from the thread that will step.
  [[nodiscard]] absl::Status WarmUp();

  // Queues a request. Errors: InvalidArgument (empty prompt, token id outside
  // the vocabulary, invalid sampling, prompt + max_tokens past the model's
  // context or larger than the whole KV pool, prompt over the step budget
  // without chunked prefill), AlreadyExists (request id in use).
  [[nodiscard]] absl::Status AddRequest(EngineRequest request);

  // Runs one step. Outputs only for requests that produced a token or finished.
  absl::StatusOr<std::vector<RequestOutput>> Step();

  // Ends a request now, in any state, releasing every block at once. Returns
  // false when the id is unknown (already finished or never added).
  bool Abort(const std::string& request_id);
  // Ends a running request as stopped (a stop string matched) and frees it.
  bool Finish(const std::string& request_id, FinishReason reason);

  bool HasUnfinishedRequests() const;
  EngineStats Stats() const;

  // Prefill side of disaggregation.
  absl::StatusOr<std::vector<BlockId>> PrefilledBlocks(const std::string& request_id) const;
  [[nodiscard]] absl::Status ReleasePrefilled(const std::string& request_id);

  // Decode side of disaggregation: reserve blocks for the prompt's KV, to be
  // written from outside: the blocks returned, in context order (with
  // reuse_cached_prefix, those after the leading blocks found in the prefix
  // cache: ceil(context / block_size) - size() of them are held already).
  // ResourceExhausted when the pool cannot hold it now.
  absl::StatusOr<std::vector<BlockId>> ReserveExternal(EngineRequest request);
  // The prompt's KV is in the reserved blocks and `first_token` was sampled
  // by the prefill side: the sequence joins the running batch. `out` (may be
  // null) receives the first token's output: finished when that token alone
  // ends the request (eos, stop id, max_tokens 1), which then is released.
  [[nodiscard]] absl::Status ActivateExternal(const std::string& request_id, int32_t first_token,
                                              RequestOutput* out = nullptr);

  // Seconds each sequence first scheduled by the latest Step() waited since
  // it became runnable (queue time, for metrics), in batch order.
  const std::vector<double>& last_step_queue_seconds() const { return last_step_queue_seconds_; }

  // `observer` (borrowed, may be null) watches every later step.
  void SetStepObserver(StepObserver* observer) { observer_ = observer; }

  const ModelConfig& model_config() const { return model_->config(); }
  int tp_size() const { return model_->tp_size(); }
  KvCache& kv_cache(int rank = 0) { return model_->kv_cache(rank); }
  const KvCacheManager& kv_manager() const { return *kv_; }
  const EngineConfig& config() const { return config_; }

 private:
  LlmEngine(std::unique_ptr<ModelExecutor> model, const EngineConfig& config, int64_t num_blocks);
  absl::Status ValidateRequest(const EngineRequest& r) const;
  Sequence* Find(const std::string& request_id) const;
  // Appends `token` and applies eos / stop ids / length; true when finished.
  bool AppendToken(Sequence& seq, const SampledToken& token, RequestOutput& out);
  void Release(Sequence& seq, FinishReason reason);

  const EngineConfig config_;
  std::unique_ptr<ModelExecutor> model_;
  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ModelRunner> runner_;
  absl::flat_hash_map<std::string, std::unique_ptr<Sequence>> seqs_;  // unfinished only
  StepObserver* observer_ = nullptr;
  int64_t next_seq_id_ = 0;
  uint64_t next_arrival_ = 0;
  int64_t num_steps_ = 0;
  int64_t last_step_num_tokens_ = 0;
  int32_t last_step_num_seqs_ = 0;
  std::vector<double> last_step_queue_seconds_;
};

}  // namespace tandem
