// AsyncEngine: runs an LlmEngine on its own loop thread, the only thread that
// touches engine state (STYLE.md 3). Other threads (gRPC reactors) submit and
// cancel requests through a queue and receive each request's text stream
// through a callback.
//
// Loop: drain the command queue (add / cancel) → if anything is unfinished,
// Step() → turn outputs into text (OutputProcessor: incremental detokenize,
// stop strings) → call each request's sink. With nothing to do it sleeps on a
// condition variable; every wait is bounded.
//
// Thread-safety: Submit(), Cancel() and Stats() are thread-safe. Sinks run on
// the loop thread and must not block (they enqueue and return).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/core/llm_engine.h"
#include "engine/core/output_processor.h"
#include "engine/tokenizer/tokenizer.h"

namespace tandem {

// One event of a request's stream: an error (the stream ends), or a chunk
// (the stream ends when chunk.finished).
struct StreamEvent {
  absl::Status status;
  TextOutput chunk;
};

using StreamSink = std::function<void(const StreamEvent&)>;

// What one engine step took, for metrics (the service layer exports it; the
// engine never sees a registry).
struct StepReport {
  double seconds = 0;       // wall time of LlmEngine::Step()
  int32_t num_seqs = 0;     // sequences in the batch
  int64_t num_tokens = 0;   // tokens computed
  std::vector<double> queue_seconds;  // one per sequence scheduled for the first time
};
using StepListener = std::function<void(const StepReport&)>;

class AsyncEngine {
 public:
  // `tokenizer` may be null (no text, no stop strings); it must outlive this.
  // `release_grace`: a reservation cancelled before activation keeps its
  // blocks this long, so puts a prefill worker posted before it learned of
  // the cancellation land in blocks nobody else owns yet (docs/architecture.md, invariant 2).
  // `now` (default: the steady clock) times leases and the grace, so tests
  // can move time by hand (the loop still wakes every 50 ms to look).
  using LeaseClock = std::function<std::chrono::steady_clock::time_point()>;
  AsyncEngine(std::unique_ptr<LlmEngine> engine, const Tokenizer* tokenizer,
              std::chrono::milliseconds release_grace = std::chrono::milliseconds(0), LeaseClock now = nullptr);
  // Stops the loop; unfinished requests get a Cancelled event.
  ~AsyncEngine();
  // Stops the loop now (idempotent). Later commands are ignored, so objects
  // the loop's callbacks use can be torn down before this one.
  void Stop();
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Queues `request`; `sink` receives its stream. Errors the engine finds
  // (invalid request, duplicate id) arrive as the stream's only event.
  void Submit(EngineRequest request, std::vector<std::string> stop_strings, StreamSink sink);
  // Ends a request now (client gone); its sink gets no further events.
  void Cancel(const std::string& request_id);

  // --- Disaggregation, decode side -------------------------------------
  // Reserves blocks for `request`'s prompt KV (written from outside); `done`
  // gets the block ids or ResourceExhausted / InvalidArgument. The
  // reservation is a lease of `ttl`: one neither activated nor renewed
  // within it expires (docs/architecture.md, invariant 3) and, like a
  // released one, keeps its blocks for the release grace before they are
  // reused (KV may still be in flight towards them).
  using ReserveDone = std::function<void(absl::StatusOr<std::vector<BlockId>>)>;
  void Reserve(EngineRequest request, std::chrono::milliseconds ttl, ReserveDone done);
  // Extends each live, not yet activated reservation of `request_ids` to a
  // full lease from now; `done` gets the ids that hold no such reservation
  // (expired, released, activated or never made), in the order given.
  using RenewDone = std::function<void(std::vector<std::string> unknown)>;
  void Renew(std::vector<std::string> request_ids, RenewDone done);
  // The reserved KV is written and `first_token` was sampled by the prefill
  // side: the request joins the running batch and streams into `sink` (the
  // first event carries the tokens after `first_token`). NotFound through the
  // sink when there is no such reservation (expired or released).
  void Activate(const std::string& request_id, int32_t first_token, StreamSink sink);

  // --- Disaggregation, prefill side ------------------------------------
  // Prefills `request` and samples its first token; `done` receives it with
  // the prompt's block ids, which stay held until ReleasePrefilled().
  struct Prefilled {
    SampledToken first_token;
    std::vector<BlockId> blocks;
  };
  using PrefillDone = std::function<void(absl::StatusOr<Prefilled>)>;
  void Prefill(EngineRequest request, PrefillDone done);
  void ReleasePrefilled(const std::string& request_id);

  // Runs `fn` on the loop thread with the engine (e.g. to read KV memory
  // addresses at start). Blocks the caller until it ran.
  void RunOnLoop(std::function<void(LlmEngine&)> fn);

  // LlmEngine::WarmUp() on the loop thread, before serving. It must run
  // there, not on the caller: a forward pass starts an OpenMP team on the
  // thread that runs it, and a second team's idle threads (more OpenMP
  // threads than CPUs) make libgomp throttle the spinning of the loop's team
  // to almost nothing, so every parallel region of every later step waits on
  // a futex wake-up (measured on 2 cores: batch-1 decode 25 ms a token
  // instead of 11). Blocks until done.
  [[nodiscard]] absl::Status WarmUp();

  // `listener` runs on the loop thread after every successful step (it must
  // not block: a lock-free histogram observation is the intended use).
  // Blocks until installed; set it before traffic, keep what it uses alive
  // until Stop().
  void SetStepListener(StepListener listener);

  // `listener` runs on the loop thread whenever a reservation stops waiting
  // for its KV (activated, released, cancelled or expired), with its blocks,
  // before they can be reused: the decode worker revokes their put grants
  // (kv_transfer/kv_put_guard.h). It must not block. Blocks until installed;
  // set it before traffic, keep what it uses alive until Stop().
  using ReservationEndListener = std::function<void(const std::vector<BlockId>& blocks)>;
  void SetReservationEndListener(ReservationEndListener listener);

  // A snapshot taken after the latest step.
  EngineStats Stats() const;
  const ModelConfig& model_config() const { return model_config_; }

 private:
  struct Command {
    enum Kind { kAdd, kCancel, kReserve, kRenew, kActivate, kPrefill, kReleasePrefilled, kRun } kind = kAdd;
    EngineRequest request;
    std::vector<std::string> stop_strings;
    StreamSink sink;
    ReserveDone reserve_done;
    PrefillDone prefill_done;
    RenewDone renew_done;
    std::vector<std::string> ids;
    std::function<void(LlmEngine&)> run;
    int32_t first_token = 0;
    std::chrono::milliseconds timeout{0};
  };

  bool Enqueue(Command c);  // false once stopped
  void Loop();
  void Apply(Command& c);
  void ExpireReservations();
  // Moves a not-activated reservation to quarantine for the release grace
  // (or frees it now when there is no grace).
  void Quarantine(const std::string& id);
  // Drops `id`'s lease (if any) and tells the reservation-end listener.
  void EndLease(const std::string& id);
  void Dispatch(const std::vector<RequestOutput>& outs);

  std::unique_ptr<LlmEngine> engine_;  // loop thread only
  const ModelConfig model_config_;
  OutputProcessor processor_;          // loop thread only
  absl::flat_hash_map<std::string, StreamSink> sinks_;  // loop thread only
  absl::flat_hash_map<std::string, PrefillDone> prefill_waiters_;  // loop thread only
  struct Lease {
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds ttl;
    std::vector<BlockId> blocks;
  };
  absl::flat_hash_map<std::string, Lease> reservations_;  // not yet activated
  // Released before activation: blocks held until the deadline, never activated.
  absl::flat_hash_map<std::string, std::chrono::steady_clock::time_point> quarantined_;
  const std::chrono::milliseconds release_grace_;
  const LeaseClock now_;
  StepListener step_listener_;  // loop thread only
  ReservationEndListener reservation_end_listener_;  // loop thread only

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace tandem
