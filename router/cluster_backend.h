// ClusterBackend: the disaggregated request path of docs/architecture.md, as the
// router runs it for each request:
//   Admit on the least-loaded decode worker (reserve blocks → KvDestination;
//   all full → wait in a bounded queue; queue full → RESOURCE_EXHAUSTED)
//   → Prefill on the least-loaded prefill worker with that destination (the
//   worker ships the KV over UCX and returns the first token; UNAVAILABLE or
//   a timeout → retried on another prefill worker, same reservation)
//   → the first token goes to the client at once (invariant 4)
//   → Decode stream from the decode worker → detokenized incrementally, stop
//   strings applied → client.
// Every path releases what it holds: Release on the decode worker when the
// stream never started, stream cancellation once it has (invariant 3).
// The router never touches tensors (invariant 5).
// Thread-safety: Start() and Cancel() are thread-safe; gRPC callbacks drive
// each request's state under its own mutex.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "router/generation_backend.h"
#include "router/worker_pool.h"

namespace tandem {

struct ClusterOptions {
  std::chrono::milliseconds prefill_timeout{120000};  // one Prefill call, transfer included
  std::chrono::milliseconds admit_timeout{10000};
  int max_queued = 256;           // requests waiting for a decode worker with room
  int max_prefill_attempts = 3;   // distinct prefill workers tried per request
  // Called once per request when a decode worker reserved its blocks, with
  // the seconds since Start (the router's queue time); may be empty.
  std::function<void(double)> observe_queue_time;
};

class ClusterBackend final : public GenerationBackend {
 public:
  // `pool` and `tokenizer` (may be null: then no text) must outlive this.
  ClusterBackend(WorkerPool* pool, const Tokenizer* tokenizer, ModelConfig config, ClusterOptions options);
  ~ClusterBackend() override;

  void Start(const std::string& id, ValidatedRequest request, Sink sink) override;
  void Cancel(const std::string& id) override;

  int num_queued() const;
  int num_in_flight() const;

 private:
  struct Call;
  void Admit(std::shared_ptr<Call> call);
  void Prefill(std::shared_ptr<Call> call);
  void Decode(std::shared_ptr<Call> call);
  // Emits tokens (text through the detokenizer and stop strings); true when
  // a stop string ended the request.
  bool Emit(Call& call, const std::vector<int32_t>& tokens, const std::vector<SampledToken>& logprobs,
            bool last, ChunkFinish finish);
  void End(const std::shared_ptr<Call>& call, const absl::Status& status);
  void ReleaseDecode(const std::shared_ptr<Call>& call);
  void AdmitQueued();

  WorkerPool* const pool_;
  const Tokenizer* const tokenizer_;
  const ModelConfig config_;
  const ClusterOptions options_;

  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Call>> calls_;
  std::deque<std::shared_ptr<Call>> queue_;  // waiting for a decode worker with room
};

}  // namespace tandem
