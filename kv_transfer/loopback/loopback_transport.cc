// LoopbackTransport: memcpy between regions of one LoopbackFabric.
// Thread-safety: see loopback_transport.h. Each region has a reader/writer
// lock: puts copy under its reader lock, unregistration takes the writer lock,
// so no copy can run into memory whose owner has gone.
#include "kv_transfer/loopback/loopback_transport.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kv_transfer/kv_put_guard.h"

namespace tandem {
namespace loopback_internal {

struct Region {
  Region(uint8_t* base, uint64_t length) : base(base), length(length) {}
  uint8_t* const base;
  const uint64_t length;
  absl::Mutex mu;
  bool alive ABSL_GUARDED_BY(mu) = true;
  KvPutGuard guard ABSL_GUARDED_BY(mu);  // no owners: every in-range put applies
  // The owning transport's counters (refusals); valid while `alive`.
  kv_transfer_internal::TransportCounters* owner_counters = nullptr;
};

}  // namespace loopback_internal

namespace {

using kv_transfer_internal::InRange;
using kv_transfer_internal::TransportCounters;
using loopback_internal::Region;

constexpr size_t kHandleBytes = 16;

uint64_t NewFabricId() {
  static std::atomic<uint32_t> next{1};
  return (static_cast<uint64_t>(getpid()) << 32) | next.fetch_add(1);
}

std::string EncodeHandle(uint64_t fabric_id, uint64_t region_id) {
  std::string out(kHandleBytes, '\0');
  std::memcpy(out.data(), &fabric_id, 8);
  std::memcpy(out.data() + 8, &region_id, 8);
  return out;
}

class LoopbackSession final : public TransferSession {
 public:
  LoopbackSession(std::shared_ptr<Region> local, std::shared_ptr<Region> remote, uint64_t put_token,
                  TransportCounters* counters)
      : local_(std::move(local)), remote_(std::move(remote)), put_token_(put_token), counters_(counters) {}

  absl::Status Put(uint64_t local_offset, uint64_t remote_offset, uint64_t length) override {
    return counters_->CountIfFailed(DoPut(local_offset, remote_offset, length));
  }

  absl::Status Flush(absl::Duration timeout) override {
    absl::Status status = failure_;
    if (status.ok()) {
      absl::ReaderMutexLock lock(&remote_->mu);
      if (!remote_->alive) status = absl::UnavailableError("loopback peer region was unregistered");
    }
    if (!status.ok()) failure_ = status;
    return counters_->CountFlush(std::move(status), absl::ZeroDuration());
  }

  uint64_t bytes_put() const override { return bytes_put_; }
  uint64_t remote_length() const override { return remote_->length; }

 private:
  absl::Status DoPut(uint64_t local_offset, uint64_t remote_offset, uint64_t length) {
    if (!InRange(local_offset, length, local_->length)) {
      return absl::InvalidArgumentError(absl::StrCat("put source [", local_offset, ", +", length,
                                                     ") outside local region of ", local_->length,
                                                     " bytes"));
    }
    if (!InRange(remote_offset, length, remote_->length)) {
      return absl::InvalidArgumentError(absl::StrCat("put target [", remote_offset, ", +", length,
                                                     ") outside remote region of ",
                                                     remote_->length, " bytes"));
    }
    if (!failure_.ok()) return failure_;
    if (length == 0) return absl::OkStatus();
    {
      absl::ReaderMutexLock lock(&remote_->mu);
      if (!remote_->alive) {
        failure_ = absl::UnavailableError("loopback peer region was unregistered");
        return failure_;
      }
      // memmove: a transport may connect to itself and overlap.
      auto write = [&] { std::memmove(remote_->base + remote_offset, local_->base + local_offset, length); };
      const KvPutGuard& guard = remote_->guard;
      if (guard.owners == nullptr) {
        write();
      } else if (!guard.owners->WriteIfGranted(guard.layout, put_token_, remote_offset, length, write)) {
        remote_->owner_counters->refused.fetch_add(1, std::memory_order_relaxed);
        failure_ = absl::FailedPreconditionError(
            "the KV transfer target refused a put into blocks not reserved under this transfer's token (the "
            "reservation was released or expired)");
        return failure_;
      }
    }
    bytes_put_ += length;
    counters_->CountPut(length);
    return absl::OkStatus();
  }

  const std::shared_ptr<Region> local_;
  const std::shared_ptr<Region> remote_;
  const uint64_t put_token_;
  TransportCounters* const counters_;
  uint64_t bytes_put_ = 0;
  absl::Status failure_;  // sticky once set
};

}  // namespace

LoopbackFabric::LoopbackFabric() : id_(NewFabricId()) {}

uint64_t LoopbackFabric::Add(std::shared_ptr<Region> region) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_region_id_++;
  regions_.emplace(id, std::move(region));
  return id;
}

void LoopbackFabric::Remove(uint64_t region_id) {
  absl::MutexLock lock(&mu_);
  regions_.erase(region_id);
}

std::shared_ptr<Region> LoopbackFabric::Find(uint64_t region_id) const {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(region_id);
  return it == regions_.end() ? nullptr : it->second;
}

LoopbackTransport::LoopbackTransport(std::shared_ptr<LoopbackFabric> fabric)
    : fabric_(std::move(fabric)) {}

LoopbackTransport::~LoopbackTransport() {
  absl::MutexLock lock(&mu_);
  if (region_ == nullptr) return;
  fabric_->Remove(region_id_);
  absl::MutexLock region_lock(&region_->mu);  // waits for in-flight copies
  region_->alive = false;
}

absl::StatusOr<MemoryDescriptor> LoopbackTransport::RegisterMemory(void* base, size_t len) {
  if (base == nullptr || len == 0) {
    return absl::InvalidArgumentError("RegisterMemory needs a non-empty region");
  }
  absl::MutexLock lock(&mu_);
  if (region_ != nullptr) return absl::FailedPreconditionError("memory is already registered");
  region_ = std::make_shared<Region>(static_cast<uint8_t*>(base), len);
  region_->owner_counters = &counters_;
  region_id_ = fabric_->Add(region_);
  descriptor_.transport = TransportKind::kLoopback;
  descriptor_.worker_address = EncodeHandle(fabric_->id(), region_id_);
  descriptor_.base_address = reinterpret_cast<uintptr_t>(base);
  descriptor_.length = len;
  return descriptor_;
}

absl::StatusOr<MemoryDescriptor> LoopbackTransport::local_descriptor() const {
  absl::MutexLock lock(&mu_);
  if (region_ == nullptr) return absl::FailedPreconditionError("no memory registered");
  return descriptor_;
}

absl::StatusOr<std::unique_ptr<TransferSession>> LoopbackTransport::Connect(const MemoryDescriptor& remote,
                                                                            uint64_t put_token) {
  std::shared_ptr<Region> local;
  {
    absl::MutexLock lock(&mu_);
    local = region_;
  }
  if (local == nullptr) {
    return counters_.CountIfFailed(
        absl::FailedPreconditionError("RegisterMemory must precede Connect"));
  }
  if (remote.transport != TransportKind::kLoopback || remote.worker_address.size() != kHandleBytes) {
    return counters_.CountIfFailed(absl::InvalidArgumentError(absl::StrCat(
        "not a loopback descriptor (transport ", TransportKindName(remote.transport), ")")));
  }
  uint64_t fabric_id = 0;
  uint64_t region_id = 0;
  std::memcpy(&fabric_id, remote.worker_address.data(), 8);
  std::memcpy(&region_id, remote.worker_address.data() + 8, 8);
  if (fabric_id != fabric_->id()) {
    return counters_.CountIfFailed(
        absl::InvalidArgumentError("loopback descriptor is from another fabric or process"));
  }
  std::shared_ptr<Region> target = fabric_->Find(region_id);
  if (target == nullptr) {
    return counters_.CountIfFailed(absl::UnavailableError(
        absl::StrCat("loopback region ", region_id, " is not registered (peer gone?)")));
  }
  if (reinterpret_cast<uintptr_t>(target->base) != remote.base_address ||
      target->length != remote.length) {
    return counters_.CountIfFailed(
        absl::InvalidArgumentError("loopback descriptor does not match the registered region"));
  }
  return std::make_unique<LoopbackSession>(std::move(local), std::move(target), put_token, &counters_);
}

bool LoopbackTransport::GuardPuts(KvPutGuard guard) {
  std::shared_ptr<Region> region;
  {
    absl::MutexLock lock(&mu_);
    region = region_;
  }
  if (region == nullptr) return false;
  absl::MutexLock lock(&region->mu);  // waits for copies in flight
  region->guard = std::move(guard);
  return true;
}

}  // namespace tandem
