#include "prefill_worker/prefill_role.h"

namespace tandem {

void PrefillRole::RegisterFlags(cli::FlagSet& flags) {
  flags.AddInt("kv-flush-timeout-ms", &flush_timeout_ms_, "longest wait for a KV transfer to complete");
  flags.AddInt("kv-sender-threads", &sender_threads_, "concurrent KV transfers (default 2)");
}

absl::Status PrefillRole::CheckFlags() const {
  if (sender_threads_ < 1 || sender_threads_ > 64) return absl::InvalidArgumentError("--kv-sender-threads in [1, 64]");
  if (flush_timeout_ms_ < 1) return absl::InvalidArgumentError("--kv-flush-timeout-ms must be >= 1");
  return absl::OkStatus();
}

LocalKvGroup LocalKvGroupOf(const WorkerModel& model, const RankTransports& kv) {
  LocalKvGroup local;
  local.total_kv_heads = model.config.num_key_value_heads;
  local.dtype = std::string(DTypeName(model.ranks[0].shape.dtype));
  for (size_t r = 0; r < model.ranks.size(); ++r) {
    local.ranks.push_back({kv.transports[r].get(), RankRegionLayout(model, static_cast<int>(r)),
                           {model.ranks[r].kv_head_begin, model.ranks[r].shape.num_kv_heads}});
  }
  return local;
}

absl::StatusOr<grpc::Service*> PrefillRole::Start(const WorkerParts& parts) {
  const WorkerModel& model = *parts.model;
  local_ = LocalKvGroupOf(model, *parts.kv);
  sender_ = std::make_unique<KvSender>(&local_, std::chrono::milliseconds(flush_timeout_ms_),
                                       static_cast<int>(sender_threads_));
  shipper_ = std::make_unique<LayerShipper>(&local_);
  model.engine->RunOnLoop([shipper = shipper_.get()](LlmEngine& e) { e.SetStepObserver(shipper); });
  service_ = std::make_unique<PrefillService>(model.engine.get(), shipper_.get(), sender_.get(),
                                              parts.flags->worker_id, parts.gate, parts.tls);
  return service_.get();
}

void PrefillRole::Started(const std::string& worker_id, prometheus::Histogram* transfer_seconds) {
  service_->set_worker_id(worker_id);
  service_->set_transfer_observer([h = transfer_seconds](double seconds) { h->Observe(seconds); });
}

void PrefillRole::Stop(const WorkerParts& parts) {
  if (parts.model->engine) parts.model->engine->Stop();  // no more steps: nothing new reaches the sender or shipper
  sender_.reset();  // drains in-flight transfers (their ReleasePrefilled is ignored now)
}

}  // namespace tandem
