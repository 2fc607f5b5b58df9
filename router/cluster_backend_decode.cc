// ClusterBackend's Decode stream (see cluster_backend.h): reading a decode
// worker's token stream, and emitting tokens to the client through the
// detokenizer and stop strings. Its failure hands the request to Migrate
// (cluster_backend_recovery.cc).
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "grpcpp/grpcpp.h"
#include "router/cluster_backend.h"
#include "router/cluster_backend_call.h"
#include "wire/worker_protocol.h"

namespace tandem {
namespace {

ChunkFinish FromProto(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH: return ChunkFinish::kLength;
    case v1::FINISH_REASON_STOP: return ChunkFinish::kStop;
    default: return ChunkFinish::kNone;
  }
}

// Reads one Decode stream and feeds the backend. Deletes itself when done.
class DecodeReader final : public grpc::ClientReadReactor<v1::DecodeResponse> {
 public:
  DecodeReader(std::function<bool(const v1::DecodeResponse&)> on_message,
               std::function<void(const grpc::Status&)> on_done)
      : on_message_(std::move(on_message)), on_done_(std::move(on_done)) {}
  void Begin() {
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (ok && on_message_(msg_)) StartRead(&msg_);
  }
  void OnDone(const grpc::Status& s) override {
    on_done_(s);
    delete this;
  }

 private:
  v1::DecodeResponse msg_;
  std::function<bool(const v1::DecodeResponse&)> on_message_;
  std::function<void(const grpc::Status&)> on_done_;
};

}  // namespace

void ClusterBackend::Decode(std::shared_ptr<Call> call) {
  std::shared_ptr<v1::DecodeWorker::Stub> stub;
  std::shared_ptr<grpc::ClientContext> ctx;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->ended) return;
    call->decode_req.set_request_id(call->attempt_id);
    // Decoding goes on from the last token the client got: the prefill's
    // first token, or after a migration the last one replayed.
    call->decode_req.set_first_token_id(static_cast<uint32_t>(call->emitted.back()));
    call->decode_ctx = std::make_shared<grpc::ClientContext>();
    call->decode_started = true;
    call->decode_activity = options_.now();
    stub = call->decode_worker->decode;
    ctx = call->decode_ctx;
  }
  CallbackStarted();  // done at the end of the reader's on_done
  auto* reader = new DecodeReader(
      [this, call](const v1::DecodeResponse& m) {
        std::vector<int32_t> tokens(m.token_ids().begin(), m.token_ids().end());
        std::vector<SampledToken> lps;
        for (const auto& lp : m.logprobs()) lps.push_back(tandem::FromProto(lp));
        const ChunkFinish finish = FromProto(m.finish_reason());
        bool stopped;
        {
          std::lock_guard<std::mutex> lock(call->mu);
          if (call->ended) return false;
          call->decode_activity = options_.now();
          stopped = Emit(*call, tokens, call->request.sampling.logprobs > 0 ? lps : std::vector<SampledToken>{},
                         finish != ChunkFinish::kNone, finish);
        }
        if (stopped || finish != ChunkFinish::kNone) {
          End(call, absl::OkStatus());  // cancels the stream if it is still open
          return false;
        }
        return true;
      },
      [this, call, ctx](const grpc::Status& s) {
        absl::Cleanup done = [this] { CallbackDone(); };
        // A stream that ended without a finish reason failed (or was cancelled).
        absl::Status why = s.ok() ? absl::InternalError("decode stream ended early") : FromGrpcStatus(s);
        {
          std::lock_guard<std::mutex> lock(call->mu);
          if (call->stalled && !call->ended) {
            why = absl::UnavailableError(absl::StrCat("the decode worker stalled (no token for ",
                                                      options_.decode_idle_timeout.count(), " ms)"));
          }
        }
        if (Migrate(call, why) != MigrateResult::kDeclined) return;
        End(call, why);
      });
  // The reader's closures hold `call` and `ctx`: the request and this stream's
  // context outlive the RPC (a migration may replace call->decode_ctx).
  stub->async()->Decode(ctx.get(), &call->decode_req, reader);
  reader->Begin();
}

bool ClusterBackend::Emit(Call& call, const std::vector<int32_t>& tokens, const std::vector<SampledToken>& logprobs,
                          bool last, ChunkFinish finish) {
  GenerationChunk c;
  c.token_ids = tokens;
  call.emitted.insert(call.emitted.end(), tokens.begin(), tokens.end());
  c.logprobs = logprobs;
  if (call.detok) {
    for (int32_t t : tokens) {
      c.text += call.stops->Feed(call.detok->Add(t));
      if (call.stops->stopped()) break;
    }
    if (!call.stops->stopped() && last) {
      c.text += call.stops->Feed(call.detok->Flush());
      c.text += call.stops->Flush();
    }
  }
  const bool stopped = call.stops->stopped();
  c.finish = stopped ? ChunkFinish::kStop : finish;
  call.sink(absl::OkStatus(), std::move(c));
  if (stopped || c.finish != ChunkFinish::kNone) call.ended = true;
  return stopped;
}

}  // namespace tandem
