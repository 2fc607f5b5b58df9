// Stable 64-bit hashes of KV blocks for the prefix cache.
//
// A block's hash covers its parent block's hash (so equal hashes mean equal
// prefixes, not just equal blocks), its token ids, and an optional cache salt
// (LoRA adapter, model revision, tenant: anything that changes the KV for the
// same tokens). The value is the same on every machine, process and build:
//
//   HashBlockTokens(parent, tokens, salt) =
//       XXH64(le64(parent) || le64(salt) || le32(tokens[0]) || ... , seed = 0)
//
// where le64/le32 are little-endian encodings (token ids as two's-complement
// 32-bit). Any xxHash64 library reproduces it, so a router in another process
// or language can index prefixes that workers cached. The first block of a
// sequence has parent kRootParentHash.
//
// A 64-bit hash can collide (and XXH64 is not collision resistant: collisions
// can be crafted). The prefix cache therefore stores each block's tokens, salt
// and the identity of its parent block and compares them on lookup (see
// BlockPool), so a collision costs a cache miss, never wrong KV. Tenants that
// must not share KV at all should use distinct salts.
//
// Changing anything here changes every hash: bump a version in the salt
// convention and update the golden values in block_hash_test.cc on purpose.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

// Parent hash of a sequence's first block.
inline constexpr uint64_t kRootParentHash = 0;

// xxHash64 (XXH64, spec 0.8) of `bytes` with `seed`, from libxxhash.
uint64_t XxHash64(std::span<const uint8_t> bytes, uint64_t seed = 0);

// Hash of one block: see the file comment for the exact definition.
uint64_t HashBlockTokens(uint64_t parent_hash, std::span<const int32_t> token_ids,
                         uint64_t cache_salt = 0);

// Chained hashes of the first full blocks of `token_ids`: element i is the hash
// of tokens [i*block_size, (i+1)*block_size) with parent element i-1 (or
// kRootParentHash). Covers min(max_blocks, token_ids.size() / block_size)
// blocks; a trailing partial block is never hashed.
// Precondition: block_size > 0, max_blocks >= 0.
std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> token_ids, int64_t block_size,
                                         uint64_t cache_salt, int64_t max_blocks);

}  // namespace tandem
