// Scratch memory for a kernel's calling thread: 64-byte aligned, grown on
// demand and never shrunk (its size follows the largest call), freed when
// the thread exits. Each kernel keeps its own `static thread_local`
// ThreadScratch, so no two users on a thread share one buffer.
// Thread-safety: one object per thread by construction.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace tandem::kernels::cpu {

class ThreadScratch {
 public:
  ThreadScratch() = default;
  ~ThreadScratch() { std::free(buf_); }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;

  // At least `bytes` (zeroed when it grows if `zero_on_growth`); the
  // previous contents are lost whenever it grows.
  void* Get(size_t bytes, bool zero_on_growth = false) {
    if (cap_ < bytes) {
      std::free(buf_);
      const size_t rounded = (bytes + 63) / 64 * 64;
      buf_ = std::aligned_alloc(64, rounded);
      if (zero_on_growth) std::memset(buf_, 0, rounded);
      cap_ = bytes;
    }
    return buf_;
  }

 private:
  void* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace tandem::kernels::cpu
