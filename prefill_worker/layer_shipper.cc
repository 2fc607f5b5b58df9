#include "prefill_worker/layer_shipper.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {

absl::Status LayerShipper::Expect(const std::string& id, const v1::KvDestination& dest,
                                  std::function<bool()> cancelled) {
  const v1::KvLayout& l = dest.layout();
  if (l.num_layers() != local_.num_layers || l.block_span_bytes() != static_cast<uint64_t>(local_.block_span_bytes) ||
      l.block_span_bytes() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination layout (", l.num_layers(), " layers, ", l.block_span_bytes(),
        " bytes per block span) differs from this worker's (", local_.num_layers, ", ", local_.block_span_bytes, ")"));
  }
  auto e = std::make_shared<Entry>();
  e->cancelled = std::move(cancelled);
  e->remote = {static_cast<int64_t>(l.num_layers()), static_cast<int64_t>(l.layer_bytes() / l.block_span_bytes()),
               static_cast<int64_t>(l.block_span_bytes())};
  for (uint32_t b : dest.block_ids()) e->dst.emplace_back(static_cast<int32_t>(b));
  ASSIGN_OR_RETURN(MemoryDescriptor peer, MemoryDescriptor::Deserialize(dest.memory_descriptor()));
  ASSIGN_OR_RETURN(e->session, transport_->Connect(peer));
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
  return Shipment{std::move(e->session), e->status, static_cast<uint32_t>(e->src.size()), e->shipped};
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
    e.src.assign(table.begin(), table.end());
    e.shipped = true;
    if (e.src.size() != e.dst.size()) {
      e.status = absl::InvalidArgumentError(
          absl::StrCat("destination has ", e.dst.size(), " blocks for a prompt of ", e.src.size()));
      continue;
    }
    active_.push_back(it->second);
  }
}

void LayerShipper::OnLayerKvWritten(int64_t layer) {
  for (const std::shared_ptr<Entry>& e : active_) {
    if (!e->status.ok()) continue;
    if (e->cancelled && e->cancelled()) {
      e->status = absl::CancelledError("prefill cancelled: KV not shipped");
      continue;
    }
    e->status = PutLayerBlocks(*e->session, local_, e->remote, layer, e->src, e->dst).status();
  }
}

}  // namespace tandem
