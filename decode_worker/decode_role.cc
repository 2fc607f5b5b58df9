#include "decode_worker/decode_role.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "decode_worker/decode_kv_plane.h"

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
  DecodeKvPlane plane = SetUpDecodeKvPlane(*parts.model, *parts.kv);
  if (!plane.puts_guarded) {
    // One-sided puts (UCX over shared memory or RDMA) reach memory without
    // the target's CPU: only the release grace keeps late puts out of reused
    // blocks, and a descriptor's holder can write anywhere in the pool.
    std::cerr << "decode worker: the KV transport's puts are one-sided (RMA) and cannot be checked against "
                 "reservations; late puts are kept out only by --release-grace-ms (docs/security.md)\n";
  }
  DecodeServiceOptions options;
  options.reservation_timeout = std::chrono::milliseconds(reservation_timeout_ms_);
  options.transport_name = parts.flags->kv_transport;
  options.put_owners = plane.owners;
  options.tls = parts.tls;
  service_ = std::make_unique<DecodeService>(parts.model->engine.get(), std::move(plane.regions), options,
                                             parts.gate);
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
