// Tests for the stable block hash: XXH64 against reference vectors, and golden
// block hashes that must never change by accident (a router indexes them).
// Golden values were computed with the reference libxxhash 0.8.1 (XXH64 via
// ctypes) over the serialization documented in engine/core/block_hash.h.

#include "engine/core/block_hash.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

std::vector<uint8_t> Bytes(size_t n) {
  std::vector<uint8_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i % 256);
  return data;
}

TEST(XxHash64Test, MatchesReferenceVectors) {
  EXPECT_EQ(XxHash64({}), 0xEF46DB3751D8E999ULL);
  const std::string abc = "abc";
  EXPECT_EQ(XxHash64({reinterpret_cast<const uint8_t*>(abc.data()), abc.size()}),
            0x44BC2CF5AD770999ULL);
  // Lengths around the 4/8/32-byte branches, bytes 0,1,2,... (mod 256).
  const struct {
    size_t len;
    uint64_t seed0;
    uint64_t seed_golden;
  } kCases[] = {
      {1, 0xe934a84adb052768ULL, 0x126bb57a12364aa5ULL},
      {3, 0xe5c7bb4533bc65ddULL, 0x67bc6ed5f6c6e4baULL},
      {4, 0xffced8604453cc1eULL, 0xd89842cd31e24e54ULL},
      {7, 0x14cc643f630c72d2ULL, 0xececf5faa8a7490eULL},
      {8, 0x884a173614b81b8dULL, 0xd18b6d7a5a668732ULL},
      {9, 0x67d85784a7c78c5bULL, 0x5e47193dadb91d9aULL},
      {31, 0xc346d2b59b4d8ee1ULL, 0xf3da6d05709c035dULL},
      {32, 0xcbf59c5116ff32b4ULL, 0xa1c89217e9d50750ULL},
      {33, 0x0c535d1acafb8eadULL, 0xe6a3c00cd6e74075ULL},
      {63, 0xe26aa9e2a95f8e4fULL, 0x26a0acd772de057eULL},
      {64, 0xf7c67301db6713f0ULL, 0x2589245e62a1969bULL},
      {100, 0x6ac1e58032166597ULL, 0x3b97d91eba03e785ULL},
      {200, 0x50dc1079b99e879cULL, 0x0ff84ab19a535cbaULL},
      {511, 0x828118695502a203ULL, 0x24f9ccf59c461e6cULL},
  };
  for (const auto& c : kCases) {
    const std::vector<uint8_t> data = Bytes(c.len);
    EXPECT_EQ(XxHash64(data), c.seed0) << "len " << c.len;
    EXPECT_EQ(XxHash64(data, 0x9E3779B97F4A7C15ULL), c.seed_golden) << "len " << c.len;
  }
}

TEST(BlockHashTest, GoldenValues) {
  const std::vector<int32_t> block0 = {1, 2, 3, 4};
  const std::vector<int32_t> block1 = {5, 6, 7, 8};
  const uint64_t h0 = HashBlockTokens(kRootParentHash, block0);
  EXPECT_EQ(h0, 0x0114ED54DCD8F830ULL);
  EXPECT_EQ(HashBlockTokens(h0, block1), 0x6606C64531E2B68CULL);
  EXPECT_EQ(HashBlockTokens(kRootParentHash, block0, /*cache_salt=*/7), 0x700512D0AEE82FEBULL);
  EXPECT_EQ(HashBlockTokens(kRootParentHash, std::vector<int32_t>{-1, 2147483647, 0, 128000}),
            0xAD554AB1A383A4C0ULL);
  std::vector<int32_t> sixteen(16);
  for (int i = 0; i < 16; ++i) sixteen[i] = 100 + i;
  EXPECT_EQ(HashBlockTokens(kRootParentHash, sixteen), 0x94860CE665F7C18DULL);
  // More tokens than the 256-byte encoding chunk.
  std::vector<int32_t> hundred(100);
  for (int i = 0; i < 100; ++i) hundred[i] = i;
  EXPECT_EQ(HashBlockTokens(0x0123456789ABCDEFULL, hundred, 42), 0x2D2382E870E3237DULL);
}

TEST(BlockHashTest, DependsOnParentTokensAndSalt) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {1, 2, 3, 5};
  const uint64_t base = HashBlockTokens(kRootParentHash, a);
  EXPECT_NE(base, HashBlockTokens(kRootParentHash, b));
  EXPECT_NE(base, HashBlockTokens(/*parent_hash=*/1, a));
  EXPECT_NE(base, HashBlockTokens(kRootParentHash, a, /*cache_salt=*/1));
  EXPECT_EQ(base, HashBlockTokens(kRootParentHash, a));
}

TEST(BlockHashTest, ChainedHashesCoverOnlyFullBlocks) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<uint64_t> hashes = ChainedBlockHashes(tokens, /*block_size=*/4,
                                                          /*cache_salt=*/0, /*max_blocks=*/10);
  ASSERT_EQ(hashes.size(), 2u);  // the partial block {9, 10} is not hashed
  EXPECT_EQ(hashes[0], 0x0114ED54DCD8F830ULL);
  EXPECT_EQ(hashes[1], 0x6606C64531E2B68CULL);
  EXPECT_EQ(ChainedBlockHashes(tokens, 4, 0, /*max_blocks=*/1).size(), 1u);
  EXPECT_TRUE(ChainedBlockHashes({}, 4, 0, 10).empty());
}

}  // namespace
}  // namespace tandem
