#include "decode_worker/decode_role.h"

#include "absl/strings/str_cat.h"

namespace tandem {

void DecodeRole::RegisterFlags(cli::FlagSet& flags) {
  flags.AddInt("reservation-timeout-ms", &reservation_timeout_ms_,
               "a reservation's lease: free it when the router neither renews nor activates it this long (default "
               "30000)");
  flags.AddInt("release-grace-ms", &release_grace_ms_,
               "keep a released, never-activated reservation's blocks this long (late KV puts land there)");
}

absl::Status DecodeRole::CheckFlags() const {
  if (reservation_timeout_ms_ < 1) return absl::InvalidArgumentError("--reservation-timeout-ms must be >= 1");
  if (release_grace_ms_ < 0) return absl::InvalidArgumentError("--release-grace-ms must be >= 0");
  return absl::OkStatus();
}

absl::StatusOr<grpc::Service*> DecodeRole::Start(const WorkerParts& parts) {
  std::vector<v1::KvRankRegion> regions;
  for (size_t r = 0; r < parts.model->ranks.size(); ++r) {
    v1::KvRankRegion& region = regions.emplace_back();
    region.set_memory_descriptor(parts.kv->descriptors[r].Serialize());
    *region.mutable_layout() = RankKvLayout(*parts.model, static_cast<int>(r));
  }
  DecodeServiceOptions options;
  options.reservation_timeout = std::chrono::milliseconds(reservation_timeout_ms_);
  options.transport_name = parts.flags->kv_transport;
  service_ = std::make_unique<DecodeService>(parts.model->engine.get(), std::move(regions), options, parts.gate);
  return service_.get();
}

void DecodeRole::Started(const std::string& worker_id, prometheus::Histogram*) { service_->set_worker_id(worker_id); }

std::string DecodeRole::Describe(const WorkerParts& parts) const {
  return absl::StrCat(", kv ", parts.model->ranks[0].shape.num_blocks, " blocks per rank");
}

bool DecodeRole::Idle(const WorkerParts& parts) const {
  const EngineStats s = parts.model->engine->Stats();  // reservations awaiting KV are requests in flight too
  return s.num_running + s.num_waiting + s.num_awaiting_kv == 0;
}

}  // namespace tandem
