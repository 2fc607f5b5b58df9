// ResponderImpl (see responder_impl.h).
#include "common/http/responder_impl.h"

#include <utility>

#include "common/http/connection.h"

namespace tandem::http {

ResponderImpl::ResponderImpl(std::shared_ptr<Connection> connection, uint64_t exchange)
    : connection_(std::move(connection)), exchange_(exchange) {}

ResponderImpl::~ResponderImpl() {
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_.load(std::memory_order_relaxed)) return;
  if (state_ == State::kNone) {
    connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kRespond,
                                            .status = 500,
                                            .content_type = "text/plain",
                                            .data = "internal error: the request got no response\n"});
  } else if (state_ == State::kStreaming) {
    connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kAbandon});
  }
}

void ResponderImpl::Respond(int status, std::string content_type, std::string body, Headers headers) {
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_.load(std::memory_order_relaxed) || state_ != State::kNone) return;
  state_ = State::kDone;
  connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kRespond,
                                          .status = status,
                                          .content_type = std::move(content_type),
                                          .data = std::move(body),
                                          .headers = std::move(headers)});
}

void ResponderImpl::StartStream(int status, std::string content_type, Headers headers) {
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_.load(std::memory_order_relaxed) || state_ != State::kNone) return;
  state_ = State::kStreaming;
  connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kStartStream,
                                          .status = status,
                                          .content_type = std::move(content_type),
                                          .headers = std::move(headers)});
}

void ResponderImpl::Write(std::string data) {
  if (data.empty()) return;  // an empty chunk would end the body
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_.load(std::memory_order_relaxed) || state_ != State::kStreaming) return;
  connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kWrite, .data = std::move(data)});
}

void ResponderImpl::End() {
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_.load(std::memory_order_relaxed) || state_ != State::kStreaming) return;
  state_ = State::kDone;
  connection_->Post(exchange_, ReplyPiece{.kind = ReplyPiece::Kind::kEnd});
}

void ResponderImpl::OnClientGone(std::function<void()> f) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!gone_.load(std::memory_order_relaxed)) {
      on_gone_ = std::move(f);
      return;
    }
  }
  if (f) f();  // already gone: at once, on the caller's thread
}

void ResponderImpl::MarkGone() {
  std::function<void()> f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_.load(std::memory_order_relaxed)) return;
    gone_.store(true, std::memory_order_release);
    f = std::move(on_gone_);
    on_gone_ = nullptr;
  }
  // Outside the lock: the callback may call back into this responder.
  if (f) f();
}

}  // namespace tandem::http
