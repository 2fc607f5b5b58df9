// KvBlockOwners and KvPutGuard: the decode side's check that a KV put lands
// only in blocks reserved, right now, for the transfer that sent it.
//
// Why: a put is posted by a prefill worker that may be stopped, partitioned
// or simply slow; its bytes can reach the decode worker long after the
// reservation they were meant for was released or expired and its blocks
// went to another request. Without a check such a late put silently corrupts
// that other request's KV (wrong tokens, no error anywhere). So every
// reservation gets a fresh random 64-bit put token (KvDestination.put_token);
// the sender stamps each put with it, and the target applies a put only when
// every block the put touches is currently granted to that token. A grant is
// made when Admit answers and revoked when the reservation ends in any way
// (activated, released, expired), always before its blocks can be reused.
// An unguessable token also means a descriptor alone does not let its holder
// write into a worker's pool (docs/security.md).
//
// Only transports that see each put at the target can check (UCX message
// puts, loopback); one-sided RMA puts cannot (KvTransport::puts_guarded()).
//
// Thread-safety: KvBlockOwners is thread-safe. Writes run under its reader
// lock and Grant/Revoke take the writer lock, so a check and its copy are
// one step: a block cannot change owner between them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "common/ids.h"
#include "kv_transfer/block_layout.h"

namespace tandem {

class KvBlockOwners {
 public:
  // Token 0 is never granted (it is what an unguarded sender stamps).
  static constexpr uint64_t kNoToken = 0;

  explicit KvBlockOwners(int64_t num_blocks);
  KvBlockOwners(const KvBlockOwners&) = delete;
  KvBlockOwners& operator=(const KvBlockOwners&) = delete;

  int64_t num_blocks() const { return static_cast<int64_t>(owner_.size()); }

  // Blocks outside the table are ignored (callers pass ids the engine gave).
  void Grant(uint64_t token, std::span<const BlockId> blocks);
  void Revoke(std::span<const BlockId> blocks);

  // Runs `write` and returns true iff [offset, offset + length) of a region
  // laid out as `layout` lies inside one layer and every block it touches is
  // granted to `token` (non-zero). Otherwise writes nothing, returns false;
  // so for a layout with a non-positive count or a size past 64 bits.
  bool WriteIfGranted(const KvRegionLayout& layout, uint64_t token, uint64_t offset, uint64_t length,
                      absl::FunctionRef<void()> write) const;

  // The owner of `block` (kNoToken when free or out of range); for tests.
  uint64_t owner(BlockId block) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<uint64_t> owner_ ABSL_GUARDED_BY(mu_);
};

// What a target transport checks its incoming puts against: the shared
// owner table and this rank's region layout (offset -> layer and block).
struct KvPutGuard {
  std::shared_ptr<const KvBlockOwners> owners;
  KvRegionLayout layout;
};

// A fresh non-zero random put token (from the OS entropy source).
uint64_t NewPutToken();

}  // namespace tandem
