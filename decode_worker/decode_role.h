// The decode role for WorkerMain: a DecodeService over the engine's KV pools
// (every rank's region handed out with each reservation), with its
// reservation timeout and release grace.
// Thread-safety: called by WorkerMain on the main thread.
#pragma once

#include <cstdint>
#include <memory>

#include "decode_worker/decode_service.h"
#include "worker/worker_main.h"

namespace tandem {

class DecodeRole final : public WorkerRole {
 public:
  v1::WorkerRole role() const override { return v1::WORKER_ROLE_DECODE; }
  std::string name() const override { return "decode"; }
  std::string service_name() const override { return v1::DecodeWorker::service_full_name(); }
  void RegisterFlags(cli::FlagSet& flags) override;
  absl::Status CheckFlags() const override;
  std::chrono::milliseconds release_grace() const override { return std::chrono::milliseconds(release_grace_ms_); }
  absl::StatusOr<grpc::Service*> Start(const WorkerParts& parts) override;
  void Started(const std::string& worker_id, prometheus::Histogram* transfer_seconds) override;
  std::string Describe(const WorkerParts& parts) const override;
  bool Idle(const WorkerParts& parts) const override;

 private:
  int64_t reservation_timeout_ms_ = 30000;
  int64_t release_grace_ms_ = 2000;
  std::unique_ptr<DecodeService> service_;
};

}  // namespace tandem
