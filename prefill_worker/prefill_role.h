// The prefill role for WorkerMain: a PrefillService whose engine ships each
// layer's KV as soon as it is written (LayerShipper, the engine's step
// observer) and falls back to whole-prompt transfers (KvSender).
// Thread-safety: called by WorkerMain on the main thread.
#pragma once

#include <cstdint>
#include <memory>

#include "prefill_worker/kv_sender.h"
#include "prefill_worker/layer_shipper.h"
#include "prefill_worker/prefill_service.h"
#include "prefill_worker/prompt_kv_transfer.h"
#include "worker/worker_main.h"

namespace tandem {

// `model`'s ranks as the KV senders see them, each with its transport from
// `kv` (which must outlive the result).
LocalKvGroup LocalKvGroupOf(const WorkerModel& model, const RankTransports& kv);

class PrefillRole final : public WorkerRole {
 public:
  v1::WorkerRole role() const override { return v1::WORKER_ROLE_PREFILL; }
  std::string name() const override { return "prefill"; }
  std::string service_name() const override { return v1::PrefillWorker::service_full_name(); }
  void RegisterFlags(cli::FlagSet& flags) override;
  absl::Status CheckFlags() const override;
  absl::StatusOr<grpc::Service*> Start(const WorkerParts& parts) override;
  void Started(const std::string& worker_id, prometheus::Histogram* transfer_seconds) override;
  void Stop(const WorkerParts& parts) override;

 private:
  int64_t flush_timeout_ms_ = 30000;
  int64_t sender_threads_ = 2;
  LocalKvGroup local_;
  // The shipper outlives the engine (it is the engine's step observer); the
  // sender is drained in Stop(), while the transports still exist.
  std::unique_ptr<LayerShipper> shipper_;
  std::unique_ptr<KvSender> sender_;
  std::unique_ptr<PrefillService> service_;
};

}  // namespace tandem
