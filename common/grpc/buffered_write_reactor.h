// BufferedWriteReactor<Response>: a server-streaming reactor that accepts
// messages from any thread and writes them one at a time (gRPC allows one
// outstanding write per call), then finishes with a status.
//
// Producers (an engine loop, a client stream) hold a StreamHandle, which
// outlives the reactor safely: once the call is done, pushes are dropped.
// On client cancel or deadline the `on_cancel` callback runs (to release
// whatever the request holds) and the call ends as CANCELLED.
// Thread-safety: StreamHandle methods are thread-safe; nothing blocks.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/server_callback.h"

namespace tandem {

template <typename Response>
class BufferedWriteReactor;

// The producer's side of one stream.
template <typename Response>
class StreamHandle {
 public:
  // Queues `r` for writing (dropped once the stream has ended).
  void Push(Response r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (reactor_ == nullptr || final_status_) return;
      pending_.push_back(std::move(r));
    }
    WriteNext(false);
  }
  // Ends the stream with `status` after the queued messages are written,
  // with `trailers` as trailing metadata (when the reactor was created with
  // its call's context).
  void Close(const grpc::Status& status, std::vector<std::pair<std::string, std::string>> trailers = {}) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (reactor_ == nullptr || final_status_) return;
      final_status_ = status;
      trailers_ = std::move(trailers);
    }
    WriteNext(false);
  }

 private:
  friend class BufferedWriteReactor<Response>;

  void Abandon() {
    std::lock_guard<std::mutex> lock(mu_);
    while (pending_.size() > (writing_ ? 1u : 0u)) pending_.pop_back();
    if (!final_status_ || final_status_->ok()) {
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
  }

  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = nullptr;
  }

  // Starts the next write, or finishes the call when nothing is left.
  void WriteNext(bool previous_done) {
    BufferedWriteReactor<Response>* r = nullptr;
    const Response* next = nullptr;
    std::optional<grpc::Status> finish;
    std::vector<std::pair<std::string, std::string>> trailers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (previous_done) {
        writing_ = false;
        if (!pending_.empty()) pending_.pop_front();
      }
      if (reactor_ == nullptr || writing_ || finished_) return;
      if (!pending_.empty()) {
        writing_ = true;
        next = &pending_.front();  // deque: stays put until popped
        r = reactor_;
      } else if (final_status_) {
        finished_ = true;
        finish = final_status_;
        trailers.swap(trailers_);
        r = reactor_;
      }
    }
    // Outside the lock: gRPC may run reactions inline.
    if (next != nullptr) {
      r->StartWrite(next);
    } else if (finish) {
      r->Finish(*finish, trailers);
    }
  }

  std::mutex mu_;
  BufferedWriteReactor<Response>* reactor_ = nullptr;  // null once the call is done
  std::deque<Response> pending_;
  std::optional<grpc::Status> final_status_;
  std::vector<std::pair<std::string, std::string>> trailers_;
  bool writing_ = false;
  bool finished_ = false;
};

template <typename Response>
class BufferedWriteReactor final : public grpc::ServerWriteReactor<Response> {
 public:
  // Returns the reactor (owned by gRPC; it deletes itself) and the handle.
  // `context` (may be null) is the call's, for trailing metadata.
  static std::pair<BufferedWriteReactor*, std::shared_ptr<StreamHandle<Response>>> Create(
      std::function<void()> on_cancel, grpc::CallbackServerContext* context = nullptr) {
    auto* r = new BufferedWriteReactor(std::move(on_cancel), context);
    return {r, r->handle_};
  }

  void OnWriteDone(bool ok) override {
    if (!ok) handle_->Abandon();  // the client is gone: end without more writes
    handle_->WriteNext(true);
  }
  void OnCancel() override {
    if (on_cancel_) on_cancel_();
    handle_->Abandon();
    handle_->WriteNext(false);
  }
  void OnDone() override {
    handle_->Detach();
    delete this;
  }

 private:
  friend class StreamHandle<Response>;

  BufferedWriteReactor(std::function<void()> on_cancel, grpc::CallbackServerContext* context)
      : on_cancel_(std::move(on_cancel)), context_(context), handle_(std::make_shared<StreamHandle<Response>>()) {
    handle_->reactor_ = this;
  }

  // Called once, by the handle, instead of the base Finish: the context is
  // valid until OnDone, which comes after this.
  void Finish(const grpc::Status& status, const std::vector<std::pair<std::string, std::string>>& trailers) {
    if (context_ != nullptr) {
      for (const auto& [key, value] : trailers) context_->AddTrailingMetadata(key, value);
    }
    grpc::ServerWriteReactor<Response>::Finish(status);
  }

  std::function<void()> on_cancel_;
  grpc::CallbackServerContext* const context_;
  std::shared_ptr<StreamHandle<Response>> handle_;
};

}  // namespace tandem
