// ClusterBackend: the disaggregated request path of docs/architecture.md, as the
// router runs it for each request:
//   Admission (PrefillWindow): a request may hold a decode reservation while
//   it waits for or runs its prefill only inside the prefill window (its
//   tokens, with everyone else's between Admit and the end of their Prefill,
//   within max_prefill_tokens_per_worker x the live prefill workers); else it
//   waits in a FIFO queue bounded by count and tokens (beyond:
//   RESOURCE_EXHAUSTED)
//   Workers are chosen by ClusterOptions::routing (router/kv_router.h):
//   kv-aware by default, weighing the prompt's prefix each holds against
//   the blocks already in flight there.
//   → Admit on a decode worker (reserve blocks → KvDestination;
//   all full → back to the front of the queue until a request ends)
//   → Prefill on a prefill worker with that destination (the
//   worker ships the KV over UCX and returns the first token; UNAVAILABLE or
//   a timeout → retried on another prefill worker, same reservation)
//   → the first token goes to the client at once (invariant 4)
//   → Decode stream from the decode worker → detokenized incrementally, stop
//   strings applied → client.
//   A Decode stream that fails mid-way (the worker died, stalled past a
//   deadline, lost the request) is migrated: Admit on another decode worker
//   with the tokens already sent as `replayed_token_ids`, Prefill of the
//   prompt followed by those tokens, Decode from the last of them; the
//   client's stream goes on with no token repeated or missing, and greedy or
//   seeded output equals an uninterrupted run.
// Every path releases what it holds: Release on the decode worker when the
// stream never started, stream cancellation once it has (invariant 3).
// A reservation is a lease (docs/architecture.md, invariant 6): a thread
// renews every reservation the router holds and has not yet activated, once
// per `lease_renew_interval`, batched per decode worker, so a request that
// waits long for its prefill keeps its blocks, and a router that dies stops
// renewing and its reservations expire. A reservation its worker no longer
// knows (expired, the worker restarted) is re-admitted elsewhere (a
// migration; past max_migrations the request ends UNAVAILABLE), and so,
// at once, is every reservation on a decode worker whose new incarnation
// registers (WorkerPool's gone listener). The renewer's beat also cancels
// stalled Decode streams and probes a queue held by full decode workers; its
// clock is ClusterOptions::now, and without an interval the owner runs each
// beat with Tick() (tests on a fake clock).
// The request path is cluster_backend.cc, its Decode stream
// cluster_backend_decode.cc; migration, the beat and the gone listener are
// cluster_backend_recovery.cc; a request's state is cluster_backend_call.h.
// The router never touches tensors (invariant 5).
// Thread-safety: Start(), Cancel() and Tick() are thread-safe; gRPC
// callbacks drive each request's state under its own mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "router/generation_backend.h"
#include "router/kv_router.h"
#include "router/prefill_window.h"
#include "router/worker_pool.h"

namespace tandem {

struct ClusterOptions {
  std::chrono::milliseconds prefill_timeout{120000};  // one Prefill call, transfer included
  std::chrono::milliseconds admit_timeout{10000};
  // Admission (router/prefill_window.h): the prompt tokens (plus replayed
  // ones) of requests between Admit and the end of their Prefill stay within
  // this many per live, non-draining prefill worker (a request bigger than
  // all of it goes alone). 8192: ~12 s of prefill on 2 CPU cores at ~700
  // prompt tok/s, well inside the decode workers' 30 s lease.
  int64_t max_prefill_tokens_per_worker = 8192;
  // The queue of requests waiting for the window or for decode room: beyond
  // either bound a request is refused RESOURCE_EXHAUSTED.
  int max_queued = 1024;
  int64_t max_queued_tokens = int64_t{1} << 20;
  int max_prefill_attempts = 3;   // distinct prefill workers tried per request
  // Token-replay migration: a Decode stream that fails after tokens reached
  // the client is continued on another decode worker (its context, prompt
  // plus the tokens already sent, prefilled again) at most this many times
  // per request; then the request ends UNAVAILABLE.
  int max_migrations = 3;
  // A request that has streamed tokens and finds no decode worker to admit
  // it, or no prefill worker to compute its context (all dead, stalled or
  // full), waits in the queue and is tried again on each beat for at most
  // this long (since it first could not be placed), not cut off at once;
  // then it ends UNAVAILABLE. A request with nothing sent yet ends
  // UNAVAILABLE at once instead (its client retries).
  std::chrono::milliseconds migration_patience{30000};
  // Called once per migration (a metric); may be empty.
  std::function<void()> on_migration;
  // A Decode stream that brings nothing for this long is stalled (a stopped
  // or wedged worker): it is cancelled and the request migrated. Checked on
  // the lease renewer's beat. Generous: one CPU step of a long prefill
  // chunk can take seconds.
  std::chrono::milliseconds decode_idle_timeout{30000};
  // How often the router renews its reservations' leases (and checks for
  // stalls, and probes a queue held by full decode workers); well under the
  // decode workers' lease (--reservation-timeout-ms, default 30 s). 0: no
  // thread does it; the owner calls Tick() (tests, on a fake clock).
  std::chrono::milliseconds lease_renew_interval{1000};
  // The router's clock for its timers (queue time, stall detection);
  // injectable so tests step it. RPC deadlines stay on the system clock.
  std::function<std::chrono::steady_clock::time_point()> now = &std::chrono::steady_clock::now;
  // Called once per request when a decode worker reserved its blocks, with
  // the seconds since Start (the router's queue time); may be empty.
  std::function<void(double)> observe_queue_time;
  // How prefill and decode workers are chosen (router/kv_router.h): by
  // default kv-aware, weighing the prefix a worker holds against its load.
  KvRoutingOptions routing;
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
  // The admission window and the queue, in tokens (gauges; 0 once every
  // request ended, whatever way it ended).
  int64_t window_tokens() const;
  int64_t queued_tokens() const;
  int num_in_window() const;
  int64_t window_high_water_tokens() const;  // the most window_tokens() has been
  // The routing choice and its books (prefix index, predicted hits).
  KvRouter& kv_router() { return kv_router_; }
  const KvRouter& kv_router() const { return kv_router_; }

  // What one Tick did.
  struct TickReport {
    int renewed = 0;  // reservations whose lease renewal was sent
    int lost = 0;     // of those, answered unknown and re-admitted or ended
    int stalled = 0;  // Decode streams cancelled as stalled (each then migrates or ends)
    bool operator==(const TickReport&) const = default;
  };
  // One beat of the renewer, run now on this thread: renew the leases of
  // reservations still waiting for their KV (and wait for the answers, each
  // bounded by its deadline, and act on "unknown"), cancel stalled Decode
  // streams, probe a held queue. The renewer thread runs the same beat
  // without waiting for answers; with lease_renew_interval 0 only Tick does.
  TickReport Tick();

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
  // After a failed Decode stream, a failed KV transfer, or a lost
  // reservation: starts the request again on another decode worker from
  // where its client is (kMigrated), or declines (the request ended, was
  // cancelled, or used up its migrations). With `lost_attempt` (the
  // reservation of that attempt is gone: its worker restarted or forgot
  // it), only if the request still waits on that reservation (else
  // kMovedOn: nothing to do), and nothing is sent to the old worker.
  enum class MigrateResult { kMigrated, kDeclined, kMovedOn };
  MigrateResult Migrate(const std::shared_ptr<Call>& call, const absl::Status& why,
                        const std::string* lost_attempt = nullptr);
  // A request that has streamed tokens could not be placed just now (see
  // ClusterOptions::migration_patience): what it holds is released and it
  // waits in the queue, at its place, for the next beat. False: declined
  // (nothing sent yet, ended, or out of patience): the caller ends it.
  bool Park(const std::shared_ptr<Call>& call, const absl::Status& why);
  // The reservation of `attempt` is lost: Migrate, or End UNAVAILABLE when
  // it declines. False: the request had moved on (nothing done).
  bool ReadmitLost(const std::shared_ptr<Call>& call, const std::string& attempt, const absl::Status& why);
  // The pool's gone listener for decode workers: `old`'s incarnation was
  // replaced by a restarted process, so every reservation there still
  // waiting for its KV is re-admitted now rather than at its lease's end.
  void DecodeWorkerGone(const WorkerHandle& old);
  // Starts (Admit) every queued request the window lets in, in order.
  // `decode_room`: a request ended (or the periodic probe), so a full decode
  // side may have room again. Never recurses: a caller that finds another
  // thread starting requests leaves the work to it.
  void StartQueued(bool decode_room);
  // The request's prefill ended (or it will not run here): out of the window.
  void LeaveWindow(const Call& call);
  // The lease renewer's thread, and one round of renewals: the number of
  // reservations renewed; with `answers`, each Renew's answer, once acted
  // on, counts the reservations found lost there and signals it.
  struct RenewAnswers;
  void RenewLoop();
  int RenewLeases(const std::shared_ptr<RenewAnswers>& answers);
  // Cancels Decode streams idle for decode_idle_timeout or longer; how many.
  int CancelStalledStreams();

  WorkerPool* const pool_;
  const Tokenizer* const tokenizer_;
  const ModelConfig config_;
  const ClusterOptions options_;
  KvRouter kv_router_;

  // Lock order: mu_, then a Call's mu (never the other way round).
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Call>> calls_;
  uint64_t next_seq_ = 0;                                         // arrival order
  PrefillWindow window_;                                          // admission: the window and the queue's order
  absl::flat_hash_map<uint64_t, std::shared_ptr<Call>> queued_;  // by seq: the calls in window_'s queue
  bool starting_ = false;      // a thread is in StartQueued's loop
  bool start_again_ = false;   // something changed while it was: it looks again
  bool shutting_down_ = false;  // the destructor runs: nothing new starts

  // Every async call whose callback uses this object (Admit, Prefill, the
  // Decode stream, Renew) is counted from just before it is issued to the
  // last statement of its callback; the destructor waits for zero.
  void CallbackStarted();
  void CallbackDone();

  // The renewer's stop flag and the callback count.
  std::mutex renew_mu_;
  std::condition_variable renew_cv_;
  bool stopping_ = false;          // guarded by renew_mu_
  int callbacks_in_flight_ = 0;    // guarded by renew_mu_
  std::thread renewer_;        // last: starts once everything above exists (none without an interval)
};

}  // namespace tandem
