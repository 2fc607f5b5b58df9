// PutLayerBlocks: validate everything, then post coalesced puts.
// Thread-safety: stateless.
#include "kv_transfer/block_layout.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {

absl::Status KvRegionLayout::Validate() const {
  if (num_layers <= 0 || num_blocks <= 0 || block_span_bytes <= 0 || num_kv_heads <= 0 ||
      block_span_bytes % (2 * num_kv_heads) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV region layout: layers=", num_layers,
                                                   " blocks=", num_blocks, " span_bytes=", block_span_bytes,
                                                   " kv_heads=", num_kv_heads));
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckBlockPairs(const KvRegionLayout& local, const KvRegionLayout& remote, int64_t layer,
                             std::span<const BlockId> src, std::span<const BlockId> dst) {
  if (layer < 0 || layer >= local.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
  }
  if (src.size() != dst.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(src.size(), " source blocks but ", dst.size(), " destination blocks"));
  }
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].value() < 0 || src[i].value() >= local.num_blocks || dst[i].value() < 0 ||
        dst[i].value() >= remote.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("block pair ", i, " (", src[i].value(), " -> ", dst[i].value(), ") out of range"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> PutLayerBlocks(TransferSession& session, const KvRegionLayout& local,
                                   const KvRegionLayout& remote, int64_t layer,
                                   std::span<const BlockId> src, std::span<const BlockId> dst) {
  RETURN_IF_ERROR(local.Validate());
  RETURN_IF_ERROR(remote.Validate());
  if (local.num_layers != remote.num_layers || local.block_span_bytes != remote.block_span_bytes) {
    return absl::InvalidArgumentError("local and remote KV layouts differ in layers or span size");
  }
  RETURN_IF_ERROR(CheckBlockPairs(local, remote, layer, src, dst));
  const uint64_t span = static_cast<uint64_t>(local.block_span_bytes);
  int num_puts = 0;
  size_t i = 0;
  while (i < src.size()) {
    size_t run = 1;
    while (i + run < src.size() && src[i + run].value() == src[i].value() + static_cast<int64_t>(run) &&
           dst[i + run].value() == dst[i].value() + static_cast<int64_t>(run)) {
      ++run;
    }
    RETURN_IF_ERROR(session.Put(local.SpanOffset(layer, src[i]), remote.SpanOffset(layer, dst[i]),
                                run * span));
    ++num_puts;
    i += run;
  }
  return num_puts;
}

absl::StatusOr<int> PutLayerHeads(TransferSession& session, const KvRegionLayout& local,
                                  const KvRegionLayout& remote, int64_t layer, std::span<const BlockId> src,
                                  std::span<const BlockId> dst, int64_t src_head, int64_t dst_head,
                                  int64_t num_heads) {
  RETURN_IF_ERROR(local.Validate());
  RETURN_IF_ERROR(remote.Validate());
  if (local.num_layers != remote.num_layers || local.head_bytes() != remote.head_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("local and remote KV layouts differ in layers (", local.num_layers,
                                                   " vs ", remote.num_layers, ") or bytes per head (",
                                                   local.head_bytes(), " vs ", remote.head_bytes(), ")"));
  }
  if (num_heads <= 0 || src_head < 0 || src_head + num_heads > local.num_kv_heads || dst_head < 0 ||
      dst_head + num_heads > remote.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("head slice ", src_head, "+", num_heads, " -> ", dst_head, "+",
                                                   num_heads, " outside ", local.num_kv_heads, " / ",
                                                   remote.num_kv_heads, " heads"));
  }
  if (num_heads == local.num_kv_heads && num_heads == remote.num_kv_heads) {
    return PutLayerBlocks(session, local, remote, layer, src, dst);
  }
  RETURN_IF_ERROR(CheckBlockPairs(local, remote, layer, src, dst));
  const uint64_t head = static_cast<uint64_t>(local.head_bytes());
  const uint64_t length = static_cast<uint64_t>(num_heads) * head;
  int num_puts = 0;
  for (size_t i = 0; i < src.size(); ++i) {
    for (int kv = 0; kv < 2; ++kv) {  // K heads, then V heads
      const uint64_t src_off = local.SpanOffset(layer, src[i]) +
                               static_cast<uint64_t>(kv * local.num_kv_heads + src_head) * head;
      const uint64_t dst_off = remote.SpanOffset(layer, dst[i]) +
                               static_cast<uint64_t>(kv * remote.num_kv_heads + dst_head) * head;
      RETURN_IF_ERROR(session.Put(src_off, dst_off, length));
      ++num_puts;
    }
  }
  return num_puts;
}

}  // namespace tandem
