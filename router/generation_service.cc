#include "router/generation_service.h"

#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/grpc/buffered_write_reactor.h"
#include "common/grpc/status.h"
#include "router/client_status.h"

namespace tandem {

namespace {

v1::FinishReason ToProto(ChunkFinish f) {
  switch (f) {
    case ChunkFinish::kLength: return v1::FINISH_REASON_LENGTH;
    case ChunkFinish::kStop: return v1::FINISH_REASON_STOP;
    case ChunkFinish::kNone: return v1::FINISH_REASON_UNSPECIFIED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// Ends a call at once with an error (validation failures), with trailing
// metadata (the retry hint) when there is a context to carry it.
class FailedReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit FailedReactor(const grpc::Status& status) { Finish(status); }
  FailedReactor(grpc::CallbackServerContext* context, const grpc::Status& status,
                const std::vector<std::pair<std::string, std::string>>& trailers) {
    for (const auto& [k, v] : trailers) context->AddTrailingMetadata(k, v);
    Finish(status);
  }
  void OnDone() override { delete this; }
};

// A stream's hold on its key's limits, ended by whichever comes first: the
// stream's last chunk or error (before the client can see it, so a client
// that starts its next call at once finds the slot free) or its
// cancellation. Thread-safe.
class StreamLease {
 public:
  explicit StreamLease(std::unique_ptr<ApiKeyAuth::Lease> lease) : lease_(std::move(lease)) {}
  // `used_tokens` < 0: unknown (cancelled), nothing is refunded.
  void End(int64_t used_tokens) {
    std::unique_ptr<ApiKeyAuth::Lease> ending;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ending = std::move(lease_);
    }
    if (ending != nullptr && used_tokens >= 0) ending->SetUsed(used_tokens);
  }

 private:
  std::mutex mu_;
  std::unique_ptr<ApiKeyAuth::Lease> lease_;
};

// The `authorization` metadata value ("" when absent).
absl::string_view AuthorizationOf(const grpc::CallbackServerContext* context) {
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? absl::string_view() : absl::string_view(it->second.data(), it->second.size());
}

// The response chunk of a backend chunk (usage on the last one).
v1::GenerateResponse ToResponse(const std::string& client_id, GenerationChunk chunk, bool want_logprobs,
                                uint32_t prompt_tokens, uint32_t* completion_tokens) {
  v1::GenerateResponse r;
  r.set_request_id(client_id);
  r.set_text(std::move(chunk.text));
  for (int32_t id : chunk.token_ids) r.add_token_ids(static_cast<uint32_t>(id));
  *completion_tokens += static_cast<uint32_t>(chunk.token_ids.size());
  if (want_logprobs) {
    for (const SampledToken& t : chunk.logprobs) {
      v1::Logprobs* lp = r.add_logprobs();
      lp->set_token_id(static_cast<uint32_t>(t.token_id));
      lp->set_logprob(t.logprob);
      for (const auto& [id, v] : t.top_logprobs) {
        v1::TokenLogprob* top = lp->add_top_logprobs();
        top->set_token_id(static_cast<uint32_t>(id));
        top->set_logprob(v);
      }
    }
  }
  if (chunk.finish != ChunkFinish::kNone) {
    r.set_finish_reason(ToProto(chunk.finish));
    r.mutable_usage()->set_prompt_tokens(prompt_tokens);
    r.mutable_usage()->set_completion_tokens(*completion_tokens);
  }
  return r;
}

// The label requests_total counts a finished stream under.
std::string FinishLabel(ChunkFinish f) { return f == ChunkFinish::kStop ? "stop" : "length"; }

}  // namespace

std::string GenerationService::NewInstanceTag() {
  std::random_device rd;
  const uint64_t tag = (uint64_t{rd()} << 32) ^ rd();
  return absl::StrCat(absl::Hex(tag, absl::kZeroPad16));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::shared_ptr<ApiKeyAuth::Key> key;
  if (auth_ != nullptr) {
    absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> k = auth_->Authenticate(AuthorizationOf(context));
    if (!k.ok()) {
      if (metrics_ != nullptr) metrics_->CountRefused(k.status().code());
      return new FailedReactor(ToGrpcStatus(k.status()));
    }
    key = *std::move(k);
  }
  // Held by the cancel callback below, which the reactor owns until the call
  // is done (last write sent): the drain waits for exactly that.
  std::shared_ptr<DrainGate::Ticket> ticket;
  if (gate_ != nullptr && (ticket = gate_->Enter()) == nullptr) {
    if (metrics_ != nullptr) metrics_->CountRefused(absl::StatusCode::kUnavailable);
    return new FailedReactor(grpc::Status(grpc::StatusCode::UNAVAILABLE, "router is shutting down"));
  }
  const uint64_t n = next_id_.fetch_add(1);
  absl::StatusOr<ValidatedRequest> v = validator_.Validate(*request, absl::StrCat("req-", n));
  if (!v.ok()) {
    if (metrics_ != nullptr) metrics_->CountRefused(v.status().code());
    return new FailedReactor(ToGrpcStatus(v.status()));
  }
  // The backend id is unique even when clients reuse their request ids, and
  // across routers that share workers.
  const std::string id = absl::StrCat(v->request_id, "#", instance_, "-", n);
  GenerationBackend* backend = backend_;
  const auto prompt_tokens = static_cast<uint32_t>(v->prompt_token_ids.size());
  // The key's limits, charged prompt + max_tokens; the lease ends with the
  // stream (the sink and the cancel callback both hold it).
  std::shared_ptr<StreamLease> lease;
  if (key != nullptr) {
    int64_t retry_after_ms = -1;
    absl::StatusOr<std::unique_ptr<ApiKeyAuth::Lease>> l =
        auth_->Admit(key, int64_t{prompt_tokens} + v->sampling.max_tokens, &retry_after_ms);
    if (!l.ok()) {
      if (metrics_ != nullptr) metrics_->CountRefused(l.status().code());
      return new FailedReactor(context, ToGrpcStatus(l.status()), RetryTrailers(retry_after_ms));
    }
    lease = std::make_shared<StreamLease>(*std::move(l));
  }
  // Null without metrics; shared by the sink and the cancel callback, which may race (the first End wins).
  std::shared_ptr<RequestTracker> tracker = metrics_ != nullptr ? metrics_->Begin(prompt_tokens) : nullptr;
  auto [reactor, stream] = BufferedWriteReactor<v1::GenerateResponse>::Create(
      [backend, id, tracker, ticket, lease] {
        if (lease) lease->End(-1);
        if (tracker) tracker->End(RequestMetrics::StatusLabel(absl::StatusCode::kCancelled));
        backend->Cancel(id);
      },
      context);
  const std::string client_id = v->request_id;
  const bool want_logprobs = v->sampling.logprobs > 0;
  auto completion_tokens = std::make_shared<uint32_t>(0);  // touched only by the sink, in order
  backend_->Start(id, *std::move(v),
                  [stream = stream, client_id, want_logprobs, prompt_tokens, completion_tokens, tracker, lease](
                      const absl::Status& st, GenerationChunk chunk) {
                    const bool last = !st.ok() || chunk.finish != ChunkFinish::kNone;
                    if (lease != nullptr && last) {
                      lease->End(int64_t{prompt_tokens} + *completion_tokens +
                                 static_cast<int64_t>(chunk.token_ids.size()));
                    }
                    if (!st.ok()) {
                      // Only the contract's codes reach the client (client_status.h).
                      const absl::Status client = ToClientStatus(st);
                      if (tracker) tracker->End(RequestMetrics::StatusLabel(client.code()));
                      stream->Close(ToGrpcStatus(client), ClientTrailers(client));
                      return;
                    }
                    // Counted before the client can see the chunk, so a scrape after the
                    // client's last read includes every token it got.
                    if (tracker) {
                      tracker->OnTokens(chunk.token_ids.size());
                      if (last) tracker->End(FinishLabel(chunk.finish));
                    }
                    stream->Push(ToResponse(client_id, std::move(chunk), want_logprobs, prompt_tokens,
                                            completion_tokens.get()));
                    if (last) stream->Close(grpc::Status::OK);
                  });
  return reactor;
}

}  // namespace tandem
