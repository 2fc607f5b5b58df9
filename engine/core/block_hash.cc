// Block hashes on libxxhash's XXH64 (Debian's libxxhash-dev). The input
// bytes are laid out explicitly little-endian, so the value never depends on
// the host; XXH64 itself is defined byte-wise and is the same everywhere.

#include "engine/core/block_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <cstddef>

#include "absl/container/inlined_vector.h"

namespace tandem {
namespace {

void Store64(uint64_t v, uint8_t* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void Store32(uint32_t v, uint8_t* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

uint64_t XxHash64(std::span<const uint8_t> bytes, uint64_t seed) {
  return XXH64(bytes.data(), bytes.size(), seed);
}

uint64_t HashBlockTokens(uint64_t parent_hash, std::span<const int32_t> token_ids,
                         uint64_t cache_salt) {
  // One contiguous buffer and the one-shot XXH64: no hash state to allocate
  // (XXH64_state_t is opaque in the shared library's ABI), and blocks of up
  // to 252 tokens stay on the stack.
  absl::InlinedVector<uint8_t, 1024> bytes(16 + 4 * token_ids.size());
  Store64(parent_hash, bytes.data());
  Store64(cache_salt, bytes.data() + 8);
  uint8_t* p = bytes.data() + 16;
  for (int32_t token : token_ids) {
    Store32(static_cast<uint32_t>(token), p);
    p += 4;
  }
  return XXH64(bytes.data(), bytes.size(), /*seed=*/0);
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
