// LayerShipper: ships a prompt's KV one layer at a time, while the forward
// pass computes the next layers (DESIGN.md: transfer overlaps compute).
//
// Before a prefill request enters the engine, Expect() connects to its
// destination. During the step in which the prompt's last token is computed,
// the engine tells the shipper the plan (OnStepPlanned) and then each layer
// as its K/V is written (OnLayerKvWritten): the shipper posts that layer of
// every prompt block (earlier chunks' blocks are complete in every layer by
// then). After the step, Take() hands over the session, to be flushed off
// the loop thread before the first token is reported.
// Thread-safety: Expect(), Take() and Forget() are thread-safe; the observer
// methods run on the engine loop thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/core/llm_engine.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/transport.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

class LayerShipper final : public StepObserver {
 public:
  // `transport` (with the local pool registered) must outlive the shipper.
  LayerShipper(KvTransport* transport, KvRegionLayout local) : transport_(transport), local_(local) {}

  // Prepares shipping for engine request `id` to `dest`: checks the layout and
  // connects. Errors: InvalidArgument (layout differs, bad descriptor),
  // Unavailable (peer unreachable).
  // `cancelled` is polled before and while shipping: once true, nothing more
  // is posted (the decode side may be reusing the blocks).
  absl::Status Expect(const std::string& id, const v1::KvDestination& dest, std::function<bool()> cancelled);

  struct Shipment {
    std::unique_ptr<TransferSession> session;  // every layer posted, not yet flushed
    absl::Status status;                       // first error while posting
    uint32_t num_blocks = 0;
    bool shipped = false;                      // false: the step never posted (ship it whole)
  };
  // Takes `id`'s shipment out (after the step that prefilled it).
  Shipment Take(const std::string& id);
  void Forget(const std::string& id);

  void OnStepPlanned(const SchedulerOutput& plan, const KvCacheManager& kv) override;
  void OnLayerKvWritten(int64_t layer) override;

 private:
  struct Entry {
    std::unique_ptr<TransferSession> session;
    KvRegionLayout remote;
    std::vector<BlockId> dst;
    std::vector<BlockId> src;  // set when the completing step is planned
    absl::Status status;
    bool shipped = false;
    std::function<bool()> cancelled;
  };

  KvTransport* const transport_;
  const KvRegionLayout local_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_;
  std::vector<std::shared_ptr<Entry>> active_;  // loop thread only: shipping in this step
};

}  // namespace tandem
