// Strong identifier types shared by every component: a `BlockId` cannot be
// passed where a `SeqId` is expected, and neither silently converts to an
// integer (Dynamo's newtypes; STYLE.md convention 4).
//
// Each id is a `StrongId<Tag, Rep>`: a trivially copyable wrapper around one
// integer with explicit construction, `value()`, total ordering, `absl::Hash`
// and `std::hash` support, and `operator<<` (so gtest prints it).
// Thread-safety: plain values; safe to copy across threads.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <utility>

namespace tandem {

template <typename Tag, typename Rep>
class StrongId {
 public:
  using rep_type = Rep;

  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep value) : value_(value) {}

  constexpr Rep value() const { return value_; }

  friend constexpr bool operator==(StrongId a, StrongId b) = default;
  friend constexpr auto operator<=>(StrongId a, StrongId b) = default;

  template <typename H>
  friend H AbslHashValue(H h, StrongId id) {
    return H::combine(std::move(h), id.value_);
  }

  friend std::ostream& operator<<(std::ostream& os, StrongId id) {
    return os << Tag::kPrefix << id.value_;
  }

 private:
  Rep value_{};
};

struct SeqIdTag {
  static constexpr const char* kPrefix = "seq:";
};
struct BlockIdTag {
  static constexpr const char* kPrefix = "block:";
};
struct RequestIdTag {
  static constexpr const char* kPrefix = "req:";
};

// One running sequence inside an engine (a request may own several, e.g. n > 1).
using SeqId = StrongId<SeqIdTag, int64_t>;
// Index of one KV block in a worker's pool: [0, num_blocks).
using BlockId = StrongId<BlockIdTag, int32_t>;
// One client request, assigned by the router; unique across the cluster.
using RequestId = StrongId<RequestIdTag, uint64_t>;

}  // namespace tandem

template <typename Tag, typename Rep>
struct std::hash<tandem::StrongId<Tag, Rep>> {
  size_t operator()(tandem::StrongId<Tag, Rep> id) const noexcept {
    return std::hash<Rep>{}(id.value());
  }
};
