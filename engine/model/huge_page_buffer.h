// An anonymous memory buffer backed by transparent huge pages where the
// kernel offers them (THP "always" or "madvise").
//
// Why: the KV cache and other large buffers the kernels walk in scattered
// 2-12 KiB pieces cost one TLB miss per 4 KiB page; under a hypervisor
// (nested paging) each miss is a two-dimensional page walk, which made a
// decode step's attention twice as slow as its arithmetic. With 2 MiB pages
// a 118 MB cache needs ~60 TLB entries instead of ~29000.
// Pages are not touched here: like malloc, memory is committed on first
// write, so a large idle pool stays free (in 2 MiB steps).
// Thread-safety: the buffer itself is plain memory; the object is not shared.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem {

class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  // Maps `bytes` (rounded up to 2 MiB, at least one page); aborts if the
  // mapping fails (as operator new would throw).
  explicit HugePageBuffer(size_t bytes);
  ~HugePageBuffer();
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }  // the rounded size

  static constexpr size_t kHugePage = size_t{2} << 20;

 private:
  void Release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tandem
