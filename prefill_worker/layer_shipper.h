// LayerShipper: ships a prompt's KV one layer at a time, while the forward
// pass computes the next layers (docs/architecture.md: transfer overlaps compute).
//
// Before a prefill request enters the engine, Expect() connects to its
// destination. During the step in which the prompt's last token is computed,
// the engine tells the shipper the plan (OnStepPlanned) and then, for each
// TP rank, each layer as that rank's K/V is written (OnLayerKvWritten): the
// shipper posts that layer of every prompt block the destination does not
// already hold (KvDestination.num_cached_blocks) from that rank to the
// destination ranks that hold its heads (earlier chunks' blocks are complete
// in every layer by then). After the step, Take() hands over the transfer,
// to be flushed off the loop thread before the first token is reported.
// Thread-safety: Expect(), Take() and Forget() are thread-safe;
// OnStepPlanned runs on the engine loop thread, OnLayerKvWritten on each
// rank's thread (concurrently for different ranks, never with OnStepPlanned).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/core/llm_engine.h"
#include "prefill_worker/prompt_kv_transfer.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

class LayerShipper final : public StepObserver {
 public:
  // `local` (its transports with the ranks' pools registered) must outlive
  // the shipper.
  explicit LayerShipper(const LocalKvGroup* local) : local_(local) {}

  // Prepares shipping for engine request `id` to `dest`: checks the layout and
  // connects. Errors: InvalidArgument (layout differs, bad descriptor),
  // Unavailable (peer unreachable).
  // `halted` is polled before and while shipping: once it returns an error
  // (the call was cancelled, the destination's lease may have run out),
  // nothing more is posted (the decode side may be reusing the blocks) and
  // that error fails the shipment.
  absl::Status Expect(const std::string& id, const v1::KvDestination& dest, std::function<absl::Status()> halted);

  struct Shipment {
    std::unique_ptr<PromptKvTransfer> transfer;  // every layer posted, not yet flushed
    absl::Status status;                       // first error while posting
    uint32_t num_blocks = 0;
    bool shipped = false;                      // false: the step never posted (ship it whole)
  };
  // Takes `id`'s shipment out (after the step that prefilled it).
  Shipment Take(const std::string& id);
  void Forget(const std::string& id);

  void OnStepPlanned(const SchedulerOutput& plan, const KvCacheManager& kv) override;
  void OnLayerKvWritten(int tp_rank, int64_t layer) override;

 private:
  struct Entry {
    std::unique_ptr<PromptKvTransfer> transfer;
    std::vector<BlockId> src;  // set when the completing step is planned: the blocks to ship
    size_t skip = 0;           // the prompt's first blocks the destination holds already
    absl::Status status;       // set on the loop thread only (planning)
    bool shipped = false;
    std::function<absl::Status()> halted;
  };

  const LocalKvGroup* const local_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_;
  std::vector<std::shared_ptr<Entry>> active_;  // loop thread only: shipping in this step
};

}  // namespace tandem
