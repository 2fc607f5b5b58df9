#include "router/generation_service.h"

#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"

namespace tandem {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

namespace {

v1::FinishReason ToProto(ChunkFinish f) {
  switch (f) {
    case ChunkFinish::kLength: return v1::FINISH_REASON_LENGTH;
    case ChunkFinish::kStop: return v1::FINISH_REASON_STOP;
    case ChunkFinish::kNone: return v1::FINISH_REASON_UNSPECIFIED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// Ends a call at once with an error (validation failures).
class FailedReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit FailedReactor(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// Streams one request. Chunks arrive from the backend on any thread; writes
// go out one at a time (gRPC allows one outstanding write).
class StreamReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  StreamReactor(GenerationBackend* backend, std::string id, ValidatedRequest request)
      : backend_(backend), id_(std::move(id)), state_(std::make_shared<State>()) {
    state_->reactor = this;
    state_->client_request_id = request.request_id;
    state_->prompt_tokens = static_cast<uint32_t>(request.prompt_token_ids.size());
    state_->want_logprobs = request.sampling.logprobs > 0;
    std::shared_ptr<State> state = state_;
    backend_->Start(id_, std::move(request), [state](const absl::Status& st, GenerationChunk chunk) {
      state->Push(st, std::move(chunk));
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) state_->Abandon();  // the client is gone: end without more writes
    state_->WriteNext(/*previous_done=*/true);
  }

  void OnCancel() override {
    backend_->Cancel(id_);
    state_->Abandon();
    state_->WriteNext(/*previous_done=*/false);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->reactor = nullptr;
    }
    delete this;
  }

 private:
  // Shared with the backend's sink, which may outlive the reactor.
  struct State {
    std::mutex mu;
    StreamReactor* reactor = nullptr;  // null once the call is done
    std::deque<v1::GenerateResponse> pending;
    std::optional<grpc::Status> final_status;  // set when the stream must end
    bool writing = false;
    bool finished = false;  // Finish() called
    std::string client_request_id;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    bool want_logprobs = false;

    void Push(const absl::Status& st, GenerationChunk chunk) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (reactor == nullptr || final_status) return;
        if (!st.ok()) {
          final_status = ToGrpcStatus(st);
        } else {
          v1::GenerateResponse r;
          r.set_request_id(client_request_id);
          r.set_text(std::move(chunk.text));
          for (int32_t id : chunk.token_ids) r.add_token_ids(static_cast<uint32_t>(id));
          completion_tokens += static_cast<uint32_t>(chunk.token_ids.size());
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
            r.mutable_usage()->set_completion_tokens(completion_tokens);
            final_status = grpc::Status::OK;
          }
          pending.push_back(std::move(r));
        }
      }
      WriteNext(/*previous_done=*/false);
    }

    // Drops unsent chunks and makes the call end as cancelled (the write in
    // flight, if any, stays at the front until its OnWriteDone).
    void Abandon() {
      std::lock_guard<std::mutex> lock(mu);
      while (pending.size() > (writing ? 1u : 0u)) pending.pop_back();
      if (!final_status || final_status->ok()) final_status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }

    // Starts the next write, or finishes the call when nothing is left.
    void WriteNext(bool previous_done) {
      StreamReactor* r = nullptr;
      const v1::GenerateResponse* next = nullptr;
      std::optional<grpc::Status> finish;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (previous_done) {
          writing = false;
          if (!pending.empty()) pending.pop_front();
        }
        if (reactor == nullptr || writing || finished) return;
        if (!pending.empty()) {
          writing = true;
          next = &pending.front();  // stays put until OnWriteDone pops it
          r = reactor;
        } else if (final_status) {
          finished = true;
          finish = final_status;
          r = reactor;
        }
      }
      // Outside the lock: gRPC may run reactions inline.
      if (next != nullptr) {
        r->StartWrite(next);
      } else if (finish) {
        r->Finish(*finish);
      }
    }
  };

  GenerationBackend* const backend_;
  const std::string id_;
  std::shared_ptr<State> state_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const uint64_t n = next_id_.fetch_add(1);
  absl::StatusOr<ValidatedRequest> v = validator_.Validate(*request, absl::StrCat("req-", n));
  if (!v.ok()) return new FailedReactor(ToGrpcStatus(v.status()));
  // The backend id is unique even when clients reuse their request ids.
  std::string id = absl::StrCat(v->request_id, "#", n);
  return new StreamReactor(backend_, std::move(id), *std::move(v));
}

}  // namespace tandem
