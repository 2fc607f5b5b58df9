#include "prefill_worker/layer_shipper.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {

absl::Status LayerShipper::Expect(const std::string& id, const v1::KvDestination& dest,
                                  std::function<absl::Status()> halted) {
  auto e = std::make_shared<Entry>();
  e->halted = std::move(halted);
  e->skip = dest.num_cached_blocks();
  ASSIGN_OR_RETURN(e->transfer, PromptKvTransfer::Connect(*local_, dest));
  std::lock_guard<std::mutex> lock(mu_);
  entries_[id] = std::move(e);
  return absl::OkStatus();
}

LayerShipper::Shipment LayerShipper::Take(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return Shipment{nullptr, absl::NotFoundError("no shipment"), 0, false};
    e = std::move(it->second);
    entries_.erase(it);
  }
  absl::Status status = e->status;
  if (status.ok() && e->transfer != nullptr) status = e->transfer->status();
  return Shipment{std::move(e->transfer), status, static_cast<uint32_t>(e->src.size()), e->shipped};
}

void LayerShipper::Forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(id);
}

void LayerShipper::OnStepPlanned(const SchedulerOutput& plan, const KvCacheManager& kv) {
  active_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.empty()) return;
  for (const ScheduledSequence& s : plan.scheduled) {
    // Only the step that computes the prompt's last token completes its KV.
    if (!s.seq->prefill_only || s.seq->num_computed_tokens + s.num_new_tokens != s.seq->num_tokens()) continue;
    auto it = entries_.find(s.seq->request_id);
    if (it == entries_.end()) continue;
    Entry& e = *it->second;
    const std::span<const BlockId> table = kv.BlockTable(s.seq->id);
    e.shipped = true;
    // The destination holds the first `skip` blocks already (its prefix cache).
    e.src.assign(table.begin() + static_cast<std::ptrdiff_t>(std::min(e.skip, table.size())), table.end());
    if (e.skip > table.size() || e.src.size() != e.transfer->dst_blocks().size()) {
      e.status = absl::InvalidArgumentError(absl::StrCat("destination holds ", e.skip, " and has ",
                                                         e.transfer->dst_blocks().size(), " blocks for a prompt of ",
                                                         table.size()));
      continue;
    }
    if (absl::Status st = e.halted ? e.halted() : absl::OkStatus(); !st.ok()) {
      e.status = std::move(st);
      continue;
    }
    active_.push_back(it->second);
  }
}

void LayerShipper::OnLayerKvWritten(int tp_rank, int64_t layer) {
  for (const std::shared_ptr<Entry>& e : active_) {
    // Polled per layer: once the caller gave up or the lease may have run
    // out, the decode side may be reusing the blocks, so nothing more is
    // posted (the error sticks to this rank and fails the shipment).
    if (absl::Status st = e->halted ? e->halted() : absl::OkStatus(); !st.ok()) {
      e->transfer->Stop(tp_rank, std::move(st));
      continue;
    }
    (void)e->transfer->PutLayer(tp_rank, layer, e->src);  // an error sticks to the transfer
  }
}

}  // namespace tandem
