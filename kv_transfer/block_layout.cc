// PutLayerBlocks: validate everything, then post coalesced puts.
// Thread-safety: stateless.
#include "kv_transfer/block_layout.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {

absl::Status KvRegionLayout::Validate() const {
  if (num_layers <= 0 || num_blocks <= 0 || block_span_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV region layout: layers=", num_layers,
                                                   " blocks=", num_blocks,
                                                   " span_bytes=", block_span_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> PutLayerBlocks(TransferSession& session, const KvRegionLayout& local,
                                   const KvRegionLayout& remote, int64_t layer,
                                   std::span<const BlockId> src, std::span<const BlockId> dst) {
  RETURN_IF_ERROR(local.Validate());
  RETURN_IF_ERROR(remote.Validate());
  if (local.num_layers != remote.num_layers || local.block_span_bytes != remote.block_span_bytes) {
    return absl::InvalidArgumentError("local and remote KV layouts differ in layers or span size");
  }
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

}  // namespace tandem
