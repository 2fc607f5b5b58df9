// PrefixIndex: which prompt prefixes each worker holds in its KV cache, as
// the chained block hashes of engine/core/block_hash.h (the hashes the
// workers' own prefix caches key their blocks by), for cache-aware routing.
// Fed by what the router routed (a prompt sent to a worker will be cached
// there) and, later, by the workers' KV events (stored / evicted). An entry
// that is wrong only costs a cache miss on the worker chosen: the worker's
// own prefix cache checks tokens, so routing never affects correctness.
//
// Each worker's entries are bounded (least recently stored dropped first),
// so a router in front of workers it never hears evictions from stays small.
// Thread-safety: every method is thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <string>

#include "absl/container/flat_hash_map.h"

namespace tandem {

class PrefixIndex {
 public:
  // `max_blocks_per_worker` >= 1.
  explicit PrefixIndex(int64_t max_blocks_per_worker) : max_blocks_(max_blocks_per_worker) {}

  // `worker` holds these blocks now (most recent last); already known ones
  // become the most recent.
  void Stored(const std::string& worker, std::span<const uint64_t> hashes);
  // `worker` dropped these blocks.
  void Evicted(const std::string& worker, std::span<const uint64_t> hashes);
  // `worker` restarted or left: nothing of it is known any more.
  void DropWorker(const std::string& worker);

  // How many leading blocks of `prompt` (its chained hashes, in order)
  // `worker` holds: a chained hash covers its whole prefix, so the first
  // miss ends the overlap.
  int64_t Overlap(const std::string& worker, std::span<const uint64_t> prompt) const;
  int64_t NumBlocks(const std::string& worker) const;

 private:
  struct Worker {
    std::list<uint64_t> order;  // least recently stored first
    absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where;
  };

  const int64_t max_blocks_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Worker> workers_;  // guarded by mu_
};

}  // namespace tandem
