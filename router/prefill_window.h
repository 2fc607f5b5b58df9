// PrefillWindow: the router's admission control, as data (no RPCs, no
// locks, no clock), so every rule is unit-tested exactly.
//
// Why: a decode reservation holds KV blocks from Admit until its Decode
// stream starts, and a burst of requests that all Admit at once reserves
// blocks for every one of them while they wait, maybe for tens of seconds,
// for a prefill worker. So a request may hold a reservation waiting for or
// running its prefill only inside a *window*: the tokens (prompt, plus the
// replayed tokens of a migrated request) of the requests between their
// Admit and the end of their Prefill are bounded by `tokens_per_prefill_
// worker` x the number of live prefill workers (what prefill can finish
// soon). A request bigger than the whole budget still goes when the window
// is empty, so nothing starves.
//
// Requests that do not fit wait in a FIFO queue bounded by count and by
// tokens (beyond either: refused, RESOURCE_EXHAUSTED at the router). Order
// is by arrival number (`seq`): a request put back (a decode worker refused
// its Admit; a migration) returns to its place, ahead of later arrivals.
//
// A decode worker that refuses an Admit (full) holds the queue: each time
// the decode side may have room again (DecodeRoom: a request ended, or the
// router's periodic probe) the queue's head is started as a probe, one
// probe at a time (so a refused probe, back at the head, is tried again
// before anyone behind it: FIFO holds), and an Admit that succeeds
// (DecodeAdmitted) opens the queue again. So window room alone (a prefill
// finished) never spins Admits against full decode workers.
//
// Thread-safety: none; ClusterBackend holds its own mutex around every call.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

namespace tandem {

class PrefillWindow {
 public:
  struct Limits {
    int64_t tokens_per_prefill_worker = 8192;
    int max_queued = 1024;
    int64_t max_queued_tokens = int64_t{1} << 20;
  };

  explicit PrefillWindow(Limits limits) : limits_(limits) {}

  // The window's size with `num_prefill_workers` live prefill workers.
  int64_t Budget(int num_prefill_workers) const;

  // A new request of `tokens`: true and into the window at once when nothing
  // waits before it and it may start (*started set); else into the queue
  // (true, *started false) when the queue's bounds allow; false: refused.
  bool Arrive(uint64_t seq, int64_t tokens, int num_prefill_workers, bool* started);
  // Puts a request back into the queue at its arrival place, out of the
  // window if it was there. `bounded`: the queue's bounds apply (false for a
  // request already streaming: it is no new load). False: refused (it is
  // then in neither).
  bool Requeue(uint64_t seq, int64_t tokens, bool bounded);
  // Out of the window (its prefill ended); nothing if it is not there.
  void Leave(uint64_t seq);
  // Out of whichever holds it (the request ended).
  void Forget(uint64_t seq);
  // Moves queued requests into the window, in order, while they may start;
  // returns them in order.
  std::vector<uint64_t> Drain(int num_prefill_workers);

  // A decode worker refused an Admit: the queue waits for DecodeRoom.
  void DecodeFull();
  // The decode side may have room again: one probe may start.
  void DecodeRoom();
  // An Admit succeeded: the decode side has room.
  void DecodeAdmitted();

  int64_t window_tokens() const { return window_tokens_; }
  // The most window_tokens() has been (tests: "at most a window's worth at
  // any time", exactly).
  int64_t high_water_tokens() const { return high_water_tokens_; }
  int num_in_window() const { return static_cast<int>(window_.size()); }
  int num_queued() const { return static_cast<int>(queue_.size()); }
  int64_t queued_tokens() const { return queued_tokens_; }
  bool decode_full() const { return decode_full_; }
  bool InWindow(uint64_t seq) const { return window_.count(seq) != 0; }
  bool Queued(uint64_t seq) const { return queue_.count(seq) != 0; }

 private:
  // Whether a request of `tokens` may enter the window now (the queue's
  // order aside).
  bool MayStart(int64_t tokens, int num_prefill_workers) const;
  // Into the window; with the decode side full, as the probe.
  void Enter(uint64_t seq, int64_t tokens);
  // `seq` left the window or the queue: if it was the probe in flight, it is over.
  void ProbeOver(uint64_t seq);

  const Limits limits_;
  std::map<uint64_t, int64_t> queue_;   // seq -> tokens, in arrival order
  std::map<uint64_t, int64_t> window_;  // seq -> tokens
  int64_t queued_tokens_ = 0;           // the sum over queue_
  int64_t window_tokens_ = 0;           // the sum over window_
  int64_t high_water_tokens_ = 0;
  bool decode_full_ = false;
  bool probe_ = false;                  // with decode_full_: one request may start
  bool probing_ = false;                // with decode_full_: a probe's Admit is in flight ...
  uint64_t probe_seq_ = 0;              // ... this request's
};

}  // namespace tandem
