// HugePageBuffer: sizes rounded to 2 MiB, 2 MiB-aligned, writable end to
// end, moved without copying, released on destruction; and, where the
// kernel runs THP in "always" or "madvise" mode, actually backed by huge
// pages once touched (AnonHugePages of this mapping in /proc/self/smaps).
#include "engine/model/huge_page_buffer.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr size_t kPage = HugePageBuffer::kHugePage;

// kB of AnonHugePages in the smaps entry of the mapping that starts at `p`
// (-1 if there is none).
int64_t AnonHugeKb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_entry = false;
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      in_entry = lo <= start && start < hi;
      continue;
    }
    if (in_entry && line.rfind("AnonHugePages:", 0) == 0) return std::stoll(line.substr(14));
  }
  return -1;
}

std::string ThpMode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(HugePageBufferTest, RoundsUpAlignsAndIsWritable) {
  for (size_t bytes : {size_t{1}, kPage - 1, kPage, kPage + 1, 5 * kPage + 123}) {
    HugePageBuffer b(bytes);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % kPage, 0u) << bytes;
    EXPECT_EQ(b.size(), (bytes + kPage - 1) / kPage * kPage) << bytes;
    std::memset(b.data(), 0xab, b.size());  // every byte is ours
    EXPECT_EQ(b.data()[b.size() - 1], 0xab);
  }
  EXPECT_EQ(HugePageBuffer(0).size(), kPage);
}

TEST(HugePageBufferTest, MovesOwnership) {
  HugePageBuffer a(3 * kPage);
  a.data()[7] = 42;
  uint8_t* p = a.data();
  HugePageBuffer b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.data()[7], 42);
  HugePageBuffer c(kPage);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), 3 * kPage);
}

TEST(HugePageBufferTest, TouchedMemoryUsesHugePagesWhereTheKernelOffersThem) {
  const std::string mode = ThpMode();
  if (mode.find("[always]") == std::string::npos && mode.find("[madvise]") == std::string::npos) {
    GTEST_SKIP() << "transparent huge pages are off here: " << mode;
  }
  HugePageBuffer b(8 * kPage);
  std::memset(b.data(), 1, b.size());
  const int64_t kb = AnonHugeKb(b.data());
  ASSERT_GE(kb, 0) << "no smaps entry for the buffer";
  // The allocator may fall back to small pages under memory fragmentation;
  // on a machine with free memory most of the range is huge.
  EXPECT_GT(kb, 0) << "THP mode " << mode;
}

}  // namespace
}  // namespace tandem
