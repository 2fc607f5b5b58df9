#include "bench/load/generate_call.h"

namespace tandem::bench {

void GenerateCall::Start(v1::Generation::Stub* stub, v1::GenerateRequest request, Clock::time_point epoch,
                         Clock::duration timeout, const std::string& api_key, RequestRecord* record,
                         std::function<void()> done) {
  auto* call = new GenerateCall(std::move(request), epoch, record, std::move(done));
  if (!api_key.empty()) call->context_.AddMetadata("authorization", "Bearer " + api_key);
  call->context_.set_deadline(std::chrono::system_clock::now() +
                              std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout));
  record->trace.start_ns = call->NowNs();
  stub->async()->Generate(&call->context_, &call->request_, call);
  call->StartRead(&call->chunk_);
  call->StartCall();
}

GenerateCall::GenerateCall(v1::GenerateRequest request, Clock::time_point epoch, RequestRecord* record,
                           std::function<void()> done)
    : request_(std::move(request)), epoch_(epoch), record_(record), done_(std::move(done)) {}

int64_t GenerateCall::NowNs() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch_).count();
}

void GenerateCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows with the status
  // Stamp first: the rest is bookkeeping that must not count as latency.
  const int64_t now_ns = NowNs();
  record_->trace.chunks.push_back({now_ns, chunk_.token_ids_size()});
  record_->output_token_ids.insert(record_->output_token_ids.end(), chunk_.token_ids().begin(),
                                   chunk_.token_ids().end());
  if (chunk_.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    record_->finish_reason = chunk_.finish_reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop";
    record_->usage_prompt_tokens = chunk_.usage().prompt_tokens();
    record_->usage_completion_tokens = chunk_.usage().completion_tokens();
  }
  StartRead(&chunk_);
}

void GenerateCall::OnDone(const grpc::Status& status) {
  record_->trace.end_ns = NowNs();
  // grpc::StatusCode and absl::StatusCode share google.rpc.Code's numbering.
  record_->status = absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  const std::function<void()> done = done_;
  delete this;
  done();
}

}  // namespace tandem::bench
