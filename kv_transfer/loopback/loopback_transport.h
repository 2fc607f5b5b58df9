// LoopbackTransport: the in-process KvTransport. Puts are memcpy (memmove)
// between regions registered with the same LoopbackFabric, for tests and for
// the colocated/dev path (docs/architecture.md, invariant 8: no UCX there).
//
// A LoopbackFabric is the registry the transports of one process share; it is
// injected (not a global), like LevelDB's Env. A loopback descriptor's
// worker_address is a 16-byte handle (fabric id, region id); it is meaningless
// in another process or fabric, and Connect() rejects it there.
//
// Semantics match the UCX transport's contract: Put() copies immediately (so
// Flush() only reports whether the peer is still there), out-of-range puts
// give InvalidArgument, and a peer whose transport was destroyed gives
// Unavailable.
// Thread-safety: LoopbackFabric and LoopbackTransport are thread-safe; a
// session is thread-compatible. A put racing with the destruction of the
// target transport either lands before it or fails with Unavailable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kv_transfer/transport.h"
#include "kv_transfer/transport_counters.h"

namespace tandem {

namespace loopback_internal {
struct Region;
}  // namespace loopback_internal

class LoopbackFabric {
 public:
  LoopbackFabric();
  LoopbackFabric(const LoopbackFabric&) = delete;
  LoopbackFabric& operator=(const LoopbackFabric&) = delete;

  uint64_t id() const { return id_; }

 private:
  friend class LoopbackTransport;

  // Returns the new region's id.
  uint64_t Add(std::shared_ptr<loopback_internal::Region> region);
  void Remove(uint64_t region_id);
  // Null when the region is unknown or was removed.
  std::shared_ptr<loopback_internal::Region> Find(uint64_t region_id) const;

  const uint64_t id_;
  mutable absl::Mutex mu_;
  uint64_t next_region_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<loopback_internal::Region>> regions_
      ABSL_GUARDED_BY(mu_);
};

class LoopbackTransport final : public KvTransport {
 public:
  explicit LoopbackTransport(std::shared_ptr<LoopbackFabric> fabric);
  // Unregisters the region: later puts into it from any session fail with
  // Unavailable.
  ~LoopbackTransport() override;

  absl::StatusOr<MemoryDescriptor> RegisterMemory(void* base, size_t len) override;
  using KvTransport::Connect;
  absl::StatusOr<std::unique_ptr<TransferSession>> Connect(const MemoryDescriptor& remote,
                                                           uint64_t put_token) override;
  // Always checks (puts are applied by the sender's thread, under the
  // target region's lock). Call after RegisterMemory() (false before).
  bool GuardPuts(KvPutGuard guard) override;
  absl::StatusOr<MemoryDescriptor> local_descriptor() const override;
  TransportStats stats() const override { return counters_.Snapshot(); }

 private:
  const std::shared_ptr<LoopbackFabric> fabric_;
  kv_transfer_internal::TransportCounters counters_;
  mutable absl::Mutex mu_;
  std::shared_ptr<loopback_internal::Region> region_ ABSL_GUARDED_BY(mu_);
  uint64_t region_id_ ABSL_GUARDED_BY(mu_) = 0;
  MemoryDescriptor descriptor_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
