#include "engine/model/huge_page_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace tandem {

HugePageBuffer::HugePageBuffer(size_t bytes) {
  size_ = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  if (size_ == 0) size_ = kHugePage;
  // Over-map by one huge page so the buffer can start on a 2 MiB boundary
  // (only aligned 2 MiB ranges can become huge pages), then trim.
  const size_t mapped = size_ + kHugePage;
  void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    std::fprintf(stderr, "HugePageBuffer: mmap of %zu bytes failed: %s\n", mapped, std::strerror(errno));
    std::abort();
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = aligned + size_;
  if (start + mapped > end) munmap(reinterpret_cast<void*>(end), start + mapped - end);
  data_ = reinterpret_cast<uint8_t*>(aligned);
  // Advice only: without THP the buffer is ordinary 4 KiB pages.
  madvise(data_, size_, MADV_HUGEPAGE);
}

HugePageBuffer::~HugePageBuffer() { Release(); }

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void HugePageBuffer::Release() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace tandem
