// KvBlockOwners: the per-block owner table behind put checks.
#include "kv_transfer/kv_put_guard.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

#include "absl/base/internal/raw_logging.h"

namespace tandem {

KvBlockOwners::KvBlockOwners(int64_t num_blocks) : owner_(static_cast<size_t>(num_blocks > 0 ? num_blocks : 0)) {}

void KvBlockOwners::Grant(uint64_t token, std::span<const BlockId> blocks) {
  absl::MutexLock lock(&mu_);
  for (BlockId b : blocks) {
    if (b.value() >= 0 && static_cast<size_t>(b.value()) < owner_.size()) owner_[b.value()] = token;
  }
}

void KvBlockOwners::Revoke(std::span<const BlockId> blocks) { Grant(kNoToken, blocks); }

bool KvBlockOwners::WriteIfGranted(const KvRegionLayout& layout, uint64_t token, uint64_t offset,
                                   uint64_t length, absl::FunctionRef<void()> write) const {
  if (token == kNoToken || length == 0 || layout.num_layers <= 0 || layout.block_span_bytes <= 0 ||
      layout.num_blocks <= 0) {
    return false;
  }
  // A layout whose sizes overflow 64 bits describes no region: its layer
  // size would wrap (to 0: a division by zero below) and let offsets alias.
  const uint64_t span = static_cast<uint64_t>(layout.block_span_bytes);
  uint64_t layer_bytes = 0;
  uint64_t total_bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(layout.num_blocks), span, &layer_bytes) ||
      __builtin_mul_overflow(static_cast<uint64_t>(layout.num_layers), layer_bytes, &total_bytes)) {
    return false;
  }
  const uint64_t layer = offset / layer_bytes;
  const uint64_t within = offset % layer_bytes;
  // One put never crosses a layer (senders post per layer); refusing such a
  // put keeps the check to one contiguous run of blocks.
  if (layer >= static_cast<uint64_t>(layout.num_layers) || length > layer_bytes - within) return false;
  const uint64_t first = within / span;
  const uint64_t last = (within + length - 1) / span;
  absl::ReaderMutexLock lock(&mu_);
  if (last >= owner_.size()) return false;
  for (uint64_t b = first; b <= last; ++b) {
    if (owner_[b] != token) return false;
  }
  write();
  return true;
}

uint64_t KvBlockOwners::owner(BlockId block) const {
  absl::ReaderMutexLock lock(&mu_);
  if (block.value() < 0 || static_cast<size_t>(block.value()) >= owner_.size()) return kNoToken;
  return owner_[block.value()];
}

uint64_t NewPutToken() {
  uint64_t token = KvBlockOwners::kNoToken;
  // getrandom on 8 bytes from the initialized pool neither blocks nor comes
  // back short; EINTR is retried, a bounded number of times.
  for (int attempt = 0; attempt < 16 && token == KvBlockOwners::kNoToken; ++attempt) {
    if (getrandom(&token, sizeof(token), 0) != static_cast<ssize_t>(sizeof(token))) {
      if (errno == EINTR) continue;
      ABSL_RAW_LOG(FATAL, "getrandom failed: errno %d", errno);
    }
  }
  if (token == KvBlockOwners::kNoToken) ABSL_RAW_LOG(FATAL, "getrandom gave no usable token");
  return token;
}

}  // namespace tandem
