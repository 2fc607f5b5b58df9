// RouteKvHeads: per destination head, pick a source replica; merge runs.
// Thread-safety: stateless.
#include "kv_transfer/kv_head_routes.h"

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

absl::Status CheckGroup(std::span<const KvRankHeads> group, int64_t total_heads, const char* what) {
  if (group.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " group has no ranks"));
  for (size_t r = 0; r < group.size(); ++r) {
    const KvRankHeads& g = group[r];
    if (g.num_heads <= 0 || g.head_begin < 0 || g.head_begin + g.num_heads > total_heads) {
      return absl::InvalidArgumentError(absl::StrCat(what, " rank ", r, " holds KV heads [", g.head_begin, ", ",
                                                     g.head_begin + g.num_heads, ") of ", total_heads));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<KvHeadRoute>> RouteKvHeads(std::span<const KvRankHeads> src,
                                                      std::span<const KvRankHeads> dst, int64_t total_heads) {
  if (total_heads <= 0) return absl::InvalidArgumentError(absl::StrCat("total KV heads ", total_heads));
  if (absl::Status st = CheckGroup(src, total_heads, "source"); !st.ok()) return st;
  if (absl::Status st = CheckGroup(dst, total_heads, "destination"); !st.ok()) return st;
  std::vector<KvHeadRoute> routes;
  for (size_t d = 0; d < dst.size(); ++d) {
    for (int64_t i = 0; i < dst[d].num_heads; ++i) {
      const int64_t head = dst[d].head_begin + i;
      std::vector<int> holders;
      for (size_t s = 0; s < src.size(); ++s) {
        if (head >= src[s].head_begin && head < src[s].head_begin + src[s].num_heads) holders.push_back(static_cast<int>(s));
      }
      if (holders.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("KV head ", head, " of destination rank ", d,
                                                       " is held by no source rank"));
      }
      // Destination ranks take turns over the replicas, so a replicated
      // source group shares the sending.
      const int s = holders[d % holders.size()];
      const int64_t src_offset = head - src[s].head_begin;
      if (!routes.empty()) {
        KvHeadRoute& last = routes.back();
        if (last.dst_rank == static_cast<int>(d) && last.src_rank == s &&
            last.src_head_offset + last.num_heads == src_offset && last.dst_head_offset + last.num_heads == i) {
          ++last.num_heads;
          continue;
        }
      }
      routes.push_back({s, static_cast<int>(d), src_offset, i, 1});
    }
  }
  return routes;
}

}  // namespace tandem
