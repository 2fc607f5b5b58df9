// KvEventLog: a worker's prefix cache changes (a block cached under its
// chained hash, a cached block evicted), numbered in order, for the routers
// it registers with (cache-aware routing, router/kv_router.h). Each router
// reads the changes after the last one it applied (Since); one that fell
// behind what is retained, or knows nothing yet, gets a snapshot instead:
// every hash the cache holds now. The log mirrors the set of held hashes
// for that, so a snapshot never needs the engine's loop thread.
//
// Sequence numbers start at 1 with the first change and are per process (a
// restarted worker is a new incarnation to the router, which forgets the old
// one's blocks). Bounded: at most max_retained changes are kept (older ones
// are dropped, and a router behind them gets a snapshot), a snapshot lists
// at most max_snapshot hashes (the rest only costs a router cache hits).
// Thread-safety: every method is thread-safe (one mutex): BlockPool records
// on the engine's loop thread, registrations read on theirs.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace tandem {

class KvEventLog {
 public:
  explicit KvEventLog(int64_t max_retained = int64_t{1} << 18, int64_t max_snapshot = int64_t{1} << 19)
      : max_retained_(max_retained), max_snapshot_(max_snapshot) {}

  void Stored(uint64_t hash) { Record(hash, /*removed=*/false); }
  void Removed(uint64_t hash) { Record(hash, /*removed=*/true); }

  // Consecutive changes of one kind.
  struct Run {
    bool removed = false;
    std::vector<uint64_t> hashes;
    bool operator==(const Run&) const = default;
  };
  struct Batch {
    // Not a snapshot: the changes numbered first_seq, first_seq + 1, ... in
    // runs' order (none when the reader is up to date). A snapshot: the
    // hashes held after change first_seq, as one stored run; the reader
    // replaces what it knew.
    uint64_t first_seq = 0;
    bool snapshot = false;
    std::vector<Run> runs;
    int64_t num_changes() const;
  };
  // What a reader that applied every change up to `applied` (0: none, or it
  // knows nothing) needs next: the changes after it, at most `max_changes`,
  // or a snapshot when applied is 0 or its next change is no longer kept
  // (at most `max_changes` hashes too, so one batch always fits a message;
  // the blocks left out only cost that reader cache hits).
  Batch Since(uint64_t applied, int64_t max_changes) const;
  uint64_t last_seq() const;
  int64_t num_held() const;

 private:
  void Record(uint64_t hash, bool removed);

  struct Change {
    uint64_t hash;
    bool removed;
  };
  const int64_t max_retained_;
  const int64_t max_snapshot_;
  mutable std::mutex mu_;
  std::deque<Change> changes_;  // numbered first_kept_ .. last_seq_
  uint64_t first_kept_ = 1;
  uint64_t last_seq_ = 0;
  absl::flat_hash_set<uint64_t> held_;
};

}  // namespace tandem
