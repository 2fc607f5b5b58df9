// The decode worker's side of the KV plane, set up once at start: the rank
// regions every Admit hands out, and the put guard (kv_transfer/kv_put_guard.h)
// that lets a prefill worker write only into the blocks of a live
// reservation, under that reservation's token. The engine revokes a
// reservation's grants when it ends (AsyncEngine::SetReservationEndListener);
// DecodeService grants them when Admit answers.
// Thread-safety: set up before traffic; the owner table is thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "kv_transfer/kv_put_guard.h"
#include "tandem/v1/worker.pb.h"
#include "worker/worker_model.h"

namespace tandem {

struct DecodeKvPlane {
  std::vector<v1::KvRankRegion> regions;  // one per TP rank, in rank order
  std::shared_ptr<KvBlockOwners> owners;   // shared by every rank (one block table)
  bool puts_guarded = false;               // every rank's transport checks its puts
};

// Describes `model`'s pools as registered in `kv`, installs the guard on each
// rank's transport and the revoking listener on the engine. Call once, before
// the worker serves; `model` and `kv` must outlive the engine's loop.
DecodeKvPlane SetUpDecodeKvPlane(const WorkerModel& model, const RankTransports& kv);

}  // namespace tandem
