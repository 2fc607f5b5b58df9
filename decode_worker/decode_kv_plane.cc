#include "decode_worker/decode_kv_plane.h"

namespace tandem {

DecodeKvPlane SetUpDecodeKvPlane(const WorkerModel& model, const RankTransports& kv) {
  DecodeKvPlane plane;
  plane.owners = std::make_shared<KvBlockOwners>(model.ranks.at(0).shape.num_blocks);
  plane.puts_guarded = true;
  for (size_t r = 0; r < model.ranks.size(); ++r) {
    const int rank = static_cast<int>(r);
    v1::KvRankRegion& region = plane.regions.emplace_back();
    region.set_memory_descriptor(kv.descriptors[r].Serialize());
    *region.mutable_layout() = RankKvLayout(model, rank);
    plane.puts_guarded &= kv.transports[r]->GuardPuts({plane.owners, RankRegionLayout(model, rank)});
  }
  model.engine->SetReservationEndListener(
      [owners = plane.owners](const std::vector<BlockId>& blocks) { owners->Revoke(blocks); });
  return plane;
}

}  // namespace tandem
