// GenerateCall: one benchmark request as one Generate server stream, driven by
// gRPC's callback API (a ClientReadReactor), stamping every chunk's arrival.
//
// Lifetime: created with new, it deletes itself after OnDone, having filled
// its RequestRecord and then called `done`. The record, the stub and
// whatever `done` touches are borrowed and must outlive the call.
// Thread-safety: gRPC runs the reactor's callbacks one at a time (never two
// at once for one call), on its own threads; the record is written only from
// them and must not be read until `done` has run.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "bench/load/report.h"
#include "grpcpp/grpcpp.h"
#include "tandem/v1/generation.grpc.pb.h"

namespace tandem::bench {

class GenerateCall : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts the call now. Times in `record` are nanoseconds since `epoch`.
  // `api_key` (when not empty) goes as "authorization: Bearer KEY".
  static void Start(v1::Generation::Stub* stub, v1::GenerateRequest request, Clock::time_point epoch,
                    Clock::duration timeout, const std::string& api_key, RequestRecord* record,
                    std::function<void()> done);

  GenerateCall(const GenerateCall&) = delete;
  GenerateCall& operator=(const GenerateCall&) = delete;

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  GenerateCall(v1::GenerateRequest request, Clock::time_point epoch, RequestRecord* record,
               std::function<void()> done);
  int64_t NowNs() const;

  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  v1::GenerateResponse chunk_;
  const Clock::time_point epoch_;
  RequestRecord* const record_;
  const std::function<void()> done_;
};

}  // namespace tandem::bench
