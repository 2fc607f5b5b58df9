// WorkerPool: the router's view of its prefill and decode workers: one gRPC
// channel each, and the number of requests the router has in flight on each
// (its load signal: the router is the only one sending them work).
// Workers come from a static list (flags) and from Register calls. A worker
// that says it is draining (stopping) gets no new work and does not count
// towards Ready(); its calls in flight continue.
// Incarnations: a worker process picks a random incarnation id at start and
// sends it with every registration. A registration of a known worker id
// with another incarnation (or at another address) is a restarted process:
// it replaces the entry (new channel, new generation, nothing in flight),
// and the gone listener hears that the old one went, so the router can move
// what it held there at once instead of waiting for a lease to run out.
// Thread-safety: all methods are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/grpc/cluster_tls.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

struct WorkerHandle {
  std::string id;
  std::string address;
  std::string incarnation;  // the worker process's (empty: static, or a worker that sends none)
  // Tokens per KV block in the worker's cache (RegisterRequest.kv_block_size;
  // 16, the engines' default, for static workers and workers that do not say).
  int32_t kv_block_size = 16;
  // What this Acquire added to the worker's load in blocks (the chooser's
  // say); Done takes it off again.
  int64_t load_blocks = 0;
  // Which of the pool's entries (one per incarnation) this handle came from:
  // Done and MarkFailed of a replaced entry's handles change nothing.
  uint64_t generation = 0;
  std::shared_ptr<v1::PrefillWorker::Stub> prefill;  // set for prefill workers
  std::shared_ptr<v1::DecodeWorker::Stub> decode;    // set for decode workers
};

class WorkerPool {
 public:
  // Workers that registered (rather than being listed statically) and have
  // not re-registered for this long are treated as gone.
  static constexpr std::chrono::milliseconds kStaleAfter{6000};

  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // `now` is injectable so tests can pass kStaleAfter without sleeping.
  // `tls`: how the channels to workers are dialed (mTLS expecting each
  // worker's role certificate, or plaintext).
  explicit WorkerPool(Clock now = &std::chrono::steady_clock::now,
                      std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure())
      : now_(std::move(now)), tls_(std::move(tls)) {}
  explicit WorkerPool(std::shared_ptr<const ClusterTls> tls)
      : WorkerPool(&std::chrono::steady_clock::now, std::move(tls)) {}

  // Adds a worker of `role`; the same id, address and incarnation again is a
  // heartbeat. Otherwise it replaces the entry with the same address or, for
  // a registered worker, the same id (a restarted worker, at a new port or
  // pod IP or the old one): a new generation with nothing in flight, and when
  // the replaced entry had this id, the gone listener is told (after the
  // pool's lock is released). `registered`: it came through Register and
  // keeps re-registering (a heartbeat). `draining`: the worker is stopping
  // (as of this heartbeat; a later one may clear it).
  void Add(v1::WorkerRole role, const std::string& id, const std::string& address, bool registered = false,
           bool draining = false, const std::string& incarnation = "", int32_t kv_block_size = 0);

  // Told, once per replaced entry, that a worker id's old incarnation is
  // gone (its handle as it was). Runs on the thread that called Add, never
  // under the pool's lock; SetGoneListener waits for a call in progress, so
  // after SetGoneListener(nullptr) returns the old listener is not running
  // and never runs again.
  using GoneListener = std::function<void(v1::WorkerRole role, const WorkerHandle& old)>;
  void SetGoneListener(GoneListener listener);

  // Picks one of the candidates Acquire offers (all healthy ones, or when
  // none is healthy all the failed ones): the index of the chosen one and
  // the blocks the request adds to its load. Runs under the pool's lock: it
  // must not call the pool.
  struct Candidate {
    const WorkerHandle* handle = nullptr;
    int in_flight = 0;             // requests the router has on it
    int64_t in_flight_blocks = 0;  // the load_blocks of those requests
  };
  struct Choice {
    int index = 0;
    int64_t load_blocks = 0;
  };
  using Chooser = std::function<Choice(const std::vector<Candidate>&)>;

  // A healthy worker of `role` not in `exclude` (by id), with its in-flight
  // count incremented (a worker marked failed is used only when no healthy
  // one is left; a draining one never): `choose`'s pick, or without one the
  // least-loaded (fewest requests in flight; the first of equals).
  // Unavailable when none is left.
  absl::StatusOr<WorkerHandle> Acquire(v1::WorkerRole role, const std::vector<std::string>& exclude = {},
                                       const Chooser& choose = nullptr);
  // Undoes one Acquire() of `worker` (nothing when its entry was replaced since).
  void Done(v1::WorkerRole role, const WorkerHandle& worker);
  // `worker` failed a call (UNAVAILABLE): avoid it for `cooldown`, or until it
  // registers again (a live worker re-registers every heartbeat). Nothing
  // when its entry was replaced since (the new incarnation did not fail).
  void MarkFailed(v1::WorkerRole role, const WorkerHandle& worker,
                  std::chrono::milliseconds cooldown = std::chrono::milliseconds(5000));

  int NumWorkers(v1::WorkerRole role) const;
  // Workers of `role` that may get new work: live and not draining (a
  // worker marked failed still counts: the cooldown is short). The router's
  // admission window is sized by the prefill ones.
  int NumServing(v1::WorkerRole role) const;
  // Whether the router can serve a request at all: at least one live (static,
  // or re-registered within kStaleAfter), non-draining worker of each role.
  // The router's grpc.health.v1 status follows this.
  bool Ready() const;
  // Every worker the pool knows, live or not, for metrics: `up` when it is
  // live (static, or re-registered lately) and not marked failed now.
  struct Health {
    std::string id;
    v1::WorkerRole role;
    bool up = false;
    int in_flight = 0;
  };
  std::vector<Health> AllHealth() const;
  // Every live worker (draining ones flagged) with the router's in-flight count on it.
  std::vector<v1::WorkerInfo> List() const;
  std::vector<WorkerHandle> All(v1::WorkerRole role) const;

 private:
  struct Entry {
    WorkerHandle handle;
    int in_flight = 0;
    int64_t in_flight_blocks = 0;
    std::chrono::steady_clock::time_point down_until{};  // failed recently: avoid until then
    bool registered = false;
    bool draining = false;
    std::chrono::steady_clock::time_point last_seen{};
    bool Live(std::chrono::steady_clock::time_point now) const {
      return !registered || now - last_seen <= kStaleAfter;
    }
  };
  std::vector<Entry>& Entries(v1::WorkerRole role) { return role == v1::WORKER_ROLE_PREFILL ? prefill_ : decode_; }
  const std::vector<Entry>& Entries(v1::WorkerRole role) const {
    return role == v1::WORKER_ROLE_PREFILL ? prefill_ : decode_;
  }

  // The entry of `worker`'s generation, or null.
  Entry* Find(v1::WorkerRole role, const WorkerHandle& worker);

  const Clock now_;
  const std::shared_ptr<const ClusterTls> tls_;
  mutable std::mutex mu_;
  std::vector<Entry> prefill_;
  std::vector<Entry> decode_;
  uint64_t next_generation_ = 0;  // guarded by mu_

  std::mutex listener_mu_;  // held while the listener runs
  GoneListener listener_;   // guarded by listener_mu_
};

}  // namespace tandem
