// TransportCounters: the lock-free counters behind TransportStats, shared by
// the transport implementations (not part of the public interface).
// Thread-safety: every member is atomic; Snapshot() is not a consistent cut
// across counters, which metrics do not need.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kv_transfer/transport.h"

namespace tandem::kv_transfer_internal {

struct TransportCounters {
  std::atomic<uint64_t> bytes_put{0};
  std::atomic<uint64_t> puts{0};
  std::atomic<uint64_t> flushes{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> flush_ns{0};
  std::atomic<uint64_t> refused{0};  // target side

  void CountPut(uint64_t bytes) {
    bytes_put.fetch_add(bytes, std::memory_order_relaxed);
    puts.fetch_add(1, std::memory_order_relaxed);
  }
  // Counts a Flush() outcome and its wait time; returns `status` unchanged.
  absl::Status CountFlush(absl::Status status, absl::Duration waited) {
    flush_ns.fetch_add(static_cast<uint64_t>(absl::ToInt64Nanoseconds(waited)),
                       std::memory_order_relaxed);
    if (status.ok()) {
      flushes.fetch_add(1, std::memory_order_relaxed);
    } else {
      failures.fetch_add(1, std::memory_order_relaxed);
    }
    return status;
  }
  // Counts a failed call when `status` is not OK; returns it unchanged.
  absl::Status CountIfFailed(absl::Status status) {
    if (!status.ok()) failures.fetch_add(1, std::memory_order_relaxed);
    return status;
  }

  TransportStats Snapshot() const {
    TransportStats s;
    s.bytes_put_total = bytes_put.load(std::memory_order_relaxed);
    s.puts_total = puts.load(std::memory_order_relaxed);
    s.flushes_total = flushes.load(std::memory_order_relaxed);
    s.failures_total = failures.load(std::memory_order_relaxed);
    s.flush_ns_total = flush_ns.load(std::memory_order_relaxed);
    s.puts_refused_total = refused.load(std::memory_order_relaxed);
    return s;
  }
};

// Range check shared by implementations: [offset, offset + length) within
// [0, region_length), without overflow.
inline bool InRange(uint64_t offset, uint64_t length, uint64_t region_length) {
  return offset <= region_length && length <= region_length - offset;
}

}  // namespace tandem::kv_transfer_internal
