// PromptKvTransfer: one prompt's KV on its way from this prefill worker's TP
// ranks into a decode worker's TP ranks, whatever the two group sizes.
//
// Connect() reads the destination's per-rank layouts, routes every KV head
// (kv_transfer/kv_head_routes.h: each destination head written once, from
// one source rank) and opens one session per (source rank, destination rank)
// pair, each on the source rank's own transport. PutLayer() posts one
// layer's blocks for the routes that start at one source rank: a whole span
// per block where the two ranks hold the same heads, otherwise one K put and
// one V put per block with exactly the routed heads (no staging copies).
// Flush() completes every session.
//
// Thread-safety: PutLayer() calls for different source ranks may run
// concurrently (each touches only its rank's sessions and status); all other
// calls from one thread at a time, not concurrently with PutLayer().
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/kv_head_routes.h"
#include "kv_transfer/transport.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// One local (source) rank: its transport with its pool registered, the
// pool's layout and which KV heads it holds.
struct LocalKvRank {
  KvTransport* transport = nullptr;
  KvRegionLayout layout;
  KvRankHeads heads;
};

// This worker's ranks, in rank order, the model's KV head count and the
// KV cache's element type.
struct LocalKvGroup {
  std::vector<LocalKvRank> ranks;
  int64_t total_kv_heads = 0;
  // DTypeName's spelling ("F32", "BF16", "F16", "I8", "F8_E4M3"), as
  // KvLayout.dtype carries it. Equal piece sizes are not enough: BF16 and
  // F16 pieces are the same size, and an int8 piece can match another
  // dtype's for some head sizes, yet their bytes mean different numbers.
  std::string dtype;
};

class PromptKvTransfer {
 public:
  // Checks `dest` against `local` (same layers, same KV dtype, same bytes
  // per head, same model head count, every destination head held here), and each
  // destination rank's layout against its own descriptor (the layout fits
  // the region; every block id is inside it), then connects.
  // InvalidArgument for a mismatch or a malformed descriptor, Unavailable
  // when a peer cannot be reached. `local` must outlive the transfer.
  static absl::StatusOr<std::unique_ptr<PromptKvTransfer>> Connect(const LocalKvGroup& local,
                                                                   const v1::KvDestination& dest);

  // The destination's block ids, in prompt order.
  const std::vector<BlockId>& dst_blocks() const { return dst_blocks_; }

  // Posts layer `layer` of local blocks `src` into dst_blocks() for every
  // route from source rank `src_rank`. The first error sticks to that rank
  // (later calls for it do nothing) and is returned.
  absl::Status PutLayer(int src_rank, int64_t layer, std::span<const BlockId> src);
  // Posts nothing more from `src_rank`: `why` becomes its error (unless it
  // already has one).
  void Stop(int src_rank, absl::Status why);
  // Every rank's first error, or OK.
  absl::Status status() const;
  // Waits for every posted put, sharing one deadline across the sessions.
  absl::Status Flush(absl::Duration timeout);
  uint64_t bytes_put() const;
  size_t num_sessions() const { return sessions_.size(); }

 private:
  struct Route {
    KvHeadRoute heads;
    size_t session = 0;  // index into sessions_
    KvRegionLayout remote;
  };
  const LocalKvGroup* local_ = nullptr;
  std::vector<BlockId> dst_blocks_;
  std::vector<std::unique_ptr<TransferSession>> sessions_;
  std::vector<std::vector<Route>> routes_by_src_;  // [source rank]
  std::vector<absl::Status> rank_status_;          // [source rank]
};

}  // namespace tandem
