#include "worker/router_registration.h"

#include "worker/kv_event_proto.h"
#include <chrono>
#include <cstdint>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

std::string NewWorkerIncarnation() {
  std::random_device rd;
  const uint64_t v = (uint64_t{rd()} << 32) ^ rd();
  return absl::StrCat(absl::Hex(v, absl::kZeroPad16));
}

RouterRegistration::RouterRegistration(std::string router_address, v1::RegisterRequest request,
                                       std::shared_ptr<const ClusterTls> tls,
                                       std::shared_ptr<const KvEventLog> kv_events)
    : router_address_(std::move(router_address)),
      request_(std::move(request)),
      tls_(std::move(tls)),
      kv_events_(std::move(kv_events)),
      thread_([this] { Run(); }) {}

RouterRegistration::~RouterRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void RouterRegistration::SetDraining() {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  cv_.notify_all();
  // A heartbeat in flight (2 s deadline) and then the draining one (2 s).
  cv_.wait_for(lock, std::chrono::seconds(5), [this] { return draining_sent_ || stop_; });
}

void RouterRegistration::Run() {
  // Every Register goes from this thread, in order, so a heartbeat sent
  // before the drain cannot arrive after the draining one and undo it.
  // With mTLS: only a peer with the router's certificate hears of us.
  auto stub = v1::WorkerRegistry::NewStub(tls_->Dial(router_address_, tls::ClusterRole::kRouter));
  auto interval = std::chrono::milliseconds(1000);
  auto next = std::chrono::steady_clock::now();
  v1::RegisterRequest request = request_;
  grpc::StatusCode last_code = grpc::StatusCode::OK;  // a change of outcome is logged once
  // The last KV event this router said it applied (0: it wants a snapshot).
  // Bounded per Register, a snapshot too: 64 Ki hashes (512 KiB, well under
  // gRPC's 4 MiB message limit, so a big cache never fails a heartbeat);
  // more changes follow on the next heartbeats.
  uint64_t events_applied = 0;
  constexpr int64_t kMaxChangesPerRegister = 65536;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, next, [this] { return stop_ || (draining_ && !draining_sent_); });
      if (stop_) return;
      request.set_draining(draining_);
    }
    if (kv_events_ != nullptr) {
      *request.mutable_kv_events() = ToProto(kv_events_->Since(events_applied, kMaxChangesPerRegister));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::RegisterResponse resp;
    const grpc::Status st = stub->Register(&ctx, request, &resp);
    if (st.ok() && resp.heartbeat_interval_ms() > 0) {
      interval = std::chrono::milliseconds(resp.heartbeat_interval_ms());
    }
    if (st.ok()) events_applied = resp.kv_events_applied();  // else the same changes go again
    if (st.error_code() != last_code) {
      // UNIMPLEMENTED: a gRPC server without the registry, most likely the
      // router's public port (the registry is on its cluster port only).
      const char* hint = st.error_code() == grpc::StatusCode::UNIMPLEMENTED
                             ? "; --router must name the router's cluster listener (its --cluster-port, default "
                               "50052), not its public port"
                             : "; retrying";
      std::cerr << request.worker_id() << ": registering with " << router_address_ << ": "
                << (st.ok() ? std::string("registered")
                            : absl::StrCat("failed (code ", static_cast<int>(st.error_code()), ": ",
                                           st.error_message(), ")", hint))
                << std::endl;
      last_code = st.error_code();
    }
    next = std::chrono::steady_clock::now() + interval;
    if (request.draining()) {
      std::lock_guard<std::mutex> lock(mu_);
      draining_sent_ = true;  // answered or failed: SetDraining() stops waiting either way
      cv_.notify_all();
    }
  }
}

}  // namespace tandem
