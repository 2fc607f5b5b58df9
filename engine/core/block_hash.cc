// XXH64 written out from the xxHash specification (doc/xxhash_spec.md, 0.8)
// with explicit little-endian loads, so the value never depends on the host.

#include "engine/core/block_hash.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace tandem {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

constexpr uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Load64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void Store64(uint64_t v, uint8_t* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void Store32(uint32_t v, uint8_t* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = Rotl(acc, 31);
  return acc * kPrime1;
}

uint64_t MergeRound(uint64_t acc, uint64_t val) {
  acc ^= Round(0, val);
  return acc * kPrime1 + kPrime4;
}

// Streaming XXH64: Update() any number of times, then Digest() once.
class XxHash64Stream {
 public:
  explicit XxHash64Stream(uint64_t seed)
      : seed_(seed), v_{seed + kPrime1 + kPrime2, seed + kPrime2, seed, seed - kPrime1} {}

  void Update(const uint8_t* data, size_t len) {
    if (len == 0) return;  // data may be null
    total_len_ += len;
    if (buf_len_ > 0) {
      const size_t take = std::min(len, kStripe - buf_len_);
      std::memcpy(buf_ + buf_len_, data, take);
      buf_len_ += take;
      data += take;
      len -= take;
      if (buf_len_ < kStripe) return;
      Stripe(buf_);
      buf_len_ = 0;
    }
    for (; len >= kStripe; data += kStripe, len -= kStripe) Stripe(data);
    std::memcpy(buf_, data, len);
    buf_len_ = len;
  }

  uint64_t Digest() const {
    uint64_t h;
    if (total_len_ >= kStripe) {
      h = Rotl(v_[0], 1) + Rotl(v_[1], 7) + Rotl(v_[2], 12) + Rotl(v_[3], 18);
      for (uint64_t v : v_) h = MergeRound(h, v);
    } else {
      h = seed_ + kPrime5;
    }
    h += total_len_;
    const uint8_t* p = buf_;
    size_t len = buf_len_;
    for (; len >= 8; p += 8, len -= 8) {
      h ^= Round(0, Load64(p));
      h = Rotl(h, 27) * kPrime1 + kPrime4;
    }
    if (len >= 4) {
      h ^= static_cast<uint64_t>(Load32(p)) * kPrime1;
      h = Rotl(h, 23) * kPrime2 + kPrime3;
      p += 4;
      len -= 4;
    }
    for (; len > 0; ++p, --len) {
      h ^= *p * kPrime5;
      h = Rotl(h, 11) * kPrime1;
    }
    h ^= h >> 33;
    h *= kPrime2;
    h ^= h >> 29;
    h *= kPrime3;
    h ^= h >> 32;
    return h;
  }

 private:
  static constexpr size_t kStripe = 32;

  void Stripe(const uint8_t* p) {
    for (int i = 0; i < 4; ++i) v_[i] = Round(v_[i], Load64(p + 8 * i));
  }

  uint64_t seed_;
  uint64_t v_[4];
  uint8_t buf_[kStripe] = {};
  size_t buf_len_ = 0;
  uint64_t total_len_ = 0;
};

}  // namespace

uint64_t XxHash64(std::span<const uint8_t> bytes, uint64_t seed) {
  XxHash64Stream stream(seed);
  stream.Update(bytes.data(), bytes.size());
  return stream.Digest();
}

uint64_t HashBlockTokens(uint64_t parent_hash, std::span<const int32_t> token_ids,
                         uint64_t cache_salt) {
  XxHash64Stream stream(/*seed=*/0);
  uint8_t header[16];
  Store64(parent_hash, header);
  Store64(cache_salt, header + 8);
  stream.Update(header, sizeof(header));
  // Encode tokens in chunks to keep Update calls few without allocating.
  uint8_t chunk[256];
  size_t used = 0;
  for (int32_t token : token_ids) {
    Store32(static_cast<uint32_t>(token), chunk + used);
    used += 4;
    if (used == sizeof(chunk)) {
      stream.Update(chunk, used);
      used = 0;
    }
  }
  stream.Update(chunk, used);
  return stream.Digest();
}

std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> token_ids, int64_t block_size,
                                         uint64_t cache_salt, int64_t max_blocks) {
  const int64_t num_full = static_cast<int64_t>(token_ids.size()) / block_size;
  const int64_t n = std::min(max_blocks, num_full);
  std::vector<uint64_t> hashes;
  hashes.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  uint64_t parent = kRootParentHash;
  for (int64_t i = 0; i < n; ++i) {
    parent = HashBlockTokens(parent, token_ids.subspan(i * block_size, block_size), cache_salt);
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace tandem
