// KvTransport: moves KV-cache bytes from this worker's registered pool
// straight into a peer worker's registered pool (docs/architecture.md, invariant 1: KV
// bytes never pass through the router or gRPC).
//
// Protocol (see README.md):
//   1. At start, every worker registers its whole KV pool once
//      (RegisterMemory) and keeps the returned MemoryDescriptor.
//   2. The decode worker reserves destination blocks, then hands its
//      descriptor (Serialize()d, opaque bytes) to the prefill worker via the
//      router.
//   3. The prefill worker Connect()s with that descriptor (endpoints are cached
//      per peer worker address, so this is cheap after the first time), Put()s
//      each computed block span as soon as its layer is done, Flush()es, and
//      only after an OK flush reports completion over gRPC.
//
// Guarded targets (kv_put_guard.h): a decode worker applies a put only into
// blocks reserved under the put's token at that moment; others are refused.
//
// Failure model: every call returns a clear status and no call blocks without
// a bound. A peer that died or became unreachable gives Unavailable; a flush
// that does not complete in time gives DeadlineExceeded; bad offsets give
// InvalidArgument. A failed session stays failed; Connect() again for a fresh
// one (the transport replaces broken endpoints).
//
// Thread-safety: KvTransport implementations are thread-safe. A
// TransferSession is thread-compatible: one thread at a time per session;
// different sessions may be used from different threads concurrently.
// Lifetimes: the registered memory must outlive the transport, and the
// transport must outlive every session it created.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv_transfer/memory_descriptor.h"

namespace tandem {

struct KvPutGuard;  // kv_put_guard.h (which needs block_layout.h, which needs this)

// Cumulative counters of one transport, for metrics export (monotonic).
struct TransportStats {
  uint64_t bytes_put_total = 0;  // bytes of successfully posted puts
  uint64_t puts_total = 0;       // successfully posted puts
  uint64_t flushes_total = 0;    // flushes that completed OK
  uint64_t failures_total = 0;   // Put/Flush/Connect calls that returned non-OK
  uint64_t flush_ns_total = 0;   // time spent waiting in Flush, OK or not
  // As a target: peers' puts refused (outside the region, or into blocks not
  // granted to their token: late puts of ended reservations, or forged ones).
  uint64_t puts_refused_total = 0;

  friend std::ostream& operator<<(std::ostream& os, const TransportStats& s) {
    return os << "{bytes_put=" << s.bytes_put_total << " puts=" << s.puts_total
              << " flushes=" << s.flushes_total << " failures=" << s.failures_total
              << " flush_ns=" << s.flush_ns_total << " refused=" << s.puts_refused_total << "}";
  }
};

// One transfer stream from our registered region into one peer's region.
// Obtained from KvTransport::Connect(); destroying it abandons (does not wait
// for) puts that were never flushed.
class TransferSession {
 public:
  virtual ~TransferSession() = default;
  TransferSession(const TransferSession&) = delete;
  TransferSession& operator=(const TransferSession&) = delete;

  // Posts one contiguous put of `length` bytes from our region at
  // `local_offset` to the peer's region at `remote_offset` (offsets relative
  // to the region bases). Non-blocking: the bytes are only guaranteed at the
  // target after a later Flush() returns OK, and the source bytes must not
  // change until then. A zero length is an OK no-op.
  // Errors: InvalidArgument (range outside either region; the session stays
  // usable), Unavailable (peer gone), or the error that failed the session
  // earlier (failures are sticky).
  [[nodiscard]] virtual absl::Status Put(uint64_t local_offset, uint64_t remote_offset,
                                         uint64_t length) = 0;

  // Waits until every put posted on this session is complete at the target
  // (remote-visible), for at most `timeout`. May also wait for other
  // sessions' puts to the same peer (UCX flushes per endpoint).
  // Errors: DeadlineExceeded (not complete in time; the session and its
  // endpoint are then retired), Unavailable (peer gone), FailedPrecondition
  // (a guarded target refused puts: the reservation is gone; sticky).
  [[nodiscard]] virtual absl::Status Flush(absl::Duration timeout) = 0;

  // Bytes successfully posted on this session.
  virtual uint64_t bytes_put() const = 0;

  // The peer region's length (the upper bound for remote offsets).
  virtual uint64_t remote_length() const = 0;

 protected:
  TransferSession() = default;
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;
  KvTransport(const KvTransport&) = delete;
  KvTransport& operator=(const KvTransport&) = delete;

  // Registers [base, base + len) for remote writes and as the source of our
  // puts; call once, at start. The memory is borrowed: it must stay valid
  // until the transport is destroyed.
  // Errors: InvalidArgument (null or empty), FailedPrecondition (already
  // registered), Internal/Unavailable (the transport refused).
  [[nodiscard]] virtual absl::StatusOr<MemoryDescriptor> RegisterMemory(void* base, size_t len) = 0;

  // Opens a session that puts into the region `remote` describes, stamping
  // every put with `put_token` (the destination reservation's token,
  // KvDestination.put_token; 0 = none, which a guarded target refuses).
  // Requires RegisterMemory() first (FailedPrecondition otherwise).
  // InvalidArgument if `remote` came from another transport kind or is
  // unusable; Unavailable if the peer cannot be reached.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<TransferSession>> Connect(const MemoryDescriptor& remote,
                                                                                uint64_t put_token) = 0;
  // An unstamped session (token 0): for unguarded targets and tests.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<TransferSession>> Connect(const MemoryDescriptor& remote) {
    return Connect(remote, 0);
  }

  // Target side: from now on apply an incoming put only when `guard` grants
  // its token every block it touches (kv_put_guard.h); a refused put fails
  // the sender's next Flush with FailedPrecondition. Call after
  // RegisterMemory(), before the descriptor is handed out. Returns whether
  // this transport can check its puts: one-sided RMA puts (UCX over
  // shared memory or RDMA) bypass the target's CPU and cannot be checked.
  virtual bool GuardPuts(KvPutGuard guard) = 0;

  // The descriptor RegisterMemory() returned (FailedPrecondition before).
  [[nodiscard]] virtual absl::StatusOr<MemoryDescriptor> local_descriptor() const = 0;

  virtual TransportStats stats() const = 0;

 protected:
  KvTransport() = default;
};

}  // namespace tandem
