// PromptKvTransfer: validate the destination, route heads, post, flush.
// Thread-safety: see the header.
#include "prefill_worker/prompt_kv_transfer.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<PromptKvTransfer>> PromptKvTransfer::Connect(const LocalKvGroup& local,
                                                                            const v1::KvDestination& dest) {
  if (local.ranks.empty()) return absl::FailedPreconditionError("no local KV ranks");
  if (dest.ranks_size() == 0) return absl::InvalidArgumentError("destination has no KV rank regions");
  const KvRegionLayout& mine = local.ranks[0].layout;
  std::vector<KvRankHeads> dst_heads;
  std::vector<KvRegionLayout> remotes;
  std::vector<MemoryDescriptor> peers;
  for (int r = 0; r < dest.ranks_size(); ++r) {
    const v1::KvLayout& l = dest.ranks(r).layout();
    if (l.num_kv_heads() == 0 || l.block_span_bytes() == 0 || l.layer_bytes() % l.block_span_bytes() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("destination rank ", r, " has an empty or malformed layout"));
    }
    const KvRegionLayout remote{static_cast<int64_t>(l.num_layers()),
                                static_cast<int64_t>(l.layer_bytes() / l.block_span_bytes()),
                                static_cast<int64_t>(l.block_span_bytes()), static_cast<int64_t>(l.num_kv_heads())};
    RETURN_IF_ERROR(remote.Validate());
    if (l.dtype() != local.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "destination rank ", r, " stores its KV cache as ", l.dtype().empty() ? "(unset)" : l.dtype(),
          ", this prefill worker as ", local.dtype, ": start both workers with the same --kv-cache-dtype"));
    }
    if (remote.num_layers != mine.num_layers || remote.head_bytes() != mine.head_bytes() ||
        static_cast<int64_t>(l.total_kv_heads()) != local.total_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "destination rank ", r, " layout (", remote.num_layers, " layers, ", remote.head_bytes(),
          " bytes per head and block, ", l.total_kv_heads(), " KV heads) differs from this worker's (",
          mine.num_layers, ", ", mine.head_bytes(), ", ", local.total_kv_heads, ")"));
    }
    // Every put's offset is computed from this layout, so it must describe
    // memory inside the region the descriptor names: a layout past it (or
    // past 64 bits, where offsets wrap) would aim puts at the wrong blocks,
    // and a one-sided put is not checked at the target.
    ASSIGN_OR_RETURN(MemoryDescriptor peer, MemoryDescriptor::Deserialize(dest.ranks(r).memory_descriptor()));
    uint64_t total_bytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(remote.num_layers), remote.layer_bytes(), &total_bytes) ||
        total_bytes > peer.length) {
      return absl::InvalidArgumentError(absl::StrCat("destination rank ", r, " layout (", remote.num_layers,
                                                     " layers of ", remote.layer_bytes(),
                                                     " bytes) does not fit its region of ", peer.length, " bytes"));
    }
    peers.push_back(std::move(peer));
    remotes.push_back(remote);
    dst_heads.push_back({static_cast<int64_t>(l.kv_head_begin()), static_cast<int64_t>(l.num_kv_heads())});
  }
  std::vector<KvRankHeads> src_heads;
  for (const LocalKvRank& r : local.ranks) src_heads.push_back(r.heads);
  ASSIGN_OR_RETURN(std::vector<KvHeadRoute> routes, RouteKvHeads(src_heads, dst_heads, local.total_kv_heads));

  auto t = std::unique_ptr<PromptKvTransfer>(new PromptKvTransfer());
  t->local_ = &local;
  for (int i = 0; i < dest.block_ids_size(); ++i) {
    // Every rank holds the same block ids (worker.proto), so each must be inside every rank's layout.
    const uint32_t b = dest.block_ids(i);
    for (const KvRegionLayout& remote : remotes) {
      if (b >= static_cast<uint64_t>(remote.num_blocks)) {
        return absl::InvalidArgumentError(
            absl::StrCat("destination block_ids[", i, "] = ", b, " is outside the ", remote.num_blocks, " blocks"));
      }
    }
    t->dst_blocks_.emplace_back(static_cast<int32_t>(b));
  }
  t->routes_by_src_.resize(local.ranks.size());
  t->rank_status_.resize(local.ranks.size());
  std::map<std::pair<int, int>, size_t> session_of;  // (src, dst) -> session
  for (const KvHeadRoute& route : routes) {
    auto [it, fresh] = session_of.try_emplace({route.src_rank, route.dst_rank}, t->sessions_.size());
    if (fresh) {
      ASSIGN_OR_RETURN(std::unique_ptr<TransferSession> session,
                       local.ranks[route.src_rank].transport->Connect(peers[route.dst_rank], dest.put_token()));
      t->sessions_.push_back(std::move(session));
    }
    t->routes_by_src_[route.src_rank].push_back({route, it->second, remotes[route.dst_rank]});
  }
  return t;
}

absl::Status PromptKvTransfer::PutLayer(int src_rank, int64_t layer, std::span<const BlockId> src) {
  absl::Status& st = rank_status_[src_rank];
  if (!st.ok()) return st;
  if (src.size() != dst_blocks_.size()) {
    st = absl::InvalidArgumentError(
        absl::StrCat("destination has ", dst_blocks_.size(), " blocks for a prompt of ", src.size()));
    return st;
  }
  const KvRegionLayout& mine = local_->ranks[src_rank].layout;
  for (const Route& r : routes_by_src_[src_rank]) {
    absl::StatusOr<int> puts = PutLayerHeads(*sessions_[r.session], mine, r.remote, layer, src, dst_blocks_,
                                             r.heads.src_head_offset, r.heads.dst_head_offset, r.heads.num_heads);
    if (!puts.ok()) {
      st = puts.status();
      return st;
    }
  }
  return absl::OkStatus();
}

void PromptKvTransfer::Stop(int src_rank, absl::Status why) {
  if (rank_status_[src_rank].ok()) rank_status_[src_rank] = std::move(why);
}

absl::Status PromptKvTransfer::status() const {
  for (const absl::Status& st : rank_status_) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status PromptKvTransfer::Flush(absl::Duration timeout) {
  RETURN_IF_ERROR(status());
  const absl::Time deadline = absl::Now() + timeout;
  for (const std::unique_ptr<TransferSession>& s : sessions_) {
    RETURN_IF_ERROR(s->Flush(std::max(absl::ZeroDuration(), deadline - absl::Now())));
  }
  return absl::OkStatus();
}

uint64_t PromptKvTransfer::bytes_put() const {
  uint64_t total = 0;
  for (const std::unique_ptr<TransferSession>& s : sessions_) total += s->bytes_put();
  return total;
}

}  // namespace tandem
