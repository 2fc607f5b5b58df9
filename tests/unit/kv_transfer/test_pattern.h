// The byte pattern the UCX tests write and the kv_transfer_peer helper
// verifies: position- and seed-dependent, so a misplaced or stale block shows.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace tandem::kv_transfer_test {

inline uint8_t PatternByte(uint64_t seed, uint64_t i) {
  uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL ^ (seed * 0xbf58476d1ce4e5b9ULL);
  x ^= x >> 29;
  return static_cast<uint8_t>(x);
}

}  // namespace tandem::kv_transfer_test
