// ResponderImpl: the Responder of one request (one "exchange") on a
// connection. It decides which reply calls count (the first of Respond or
// StartStream; Write/End only while streaming; nothing once the client is
// gone) and forwards those to the connection's strand, in call order.
//
// Why the bookkeeping lives here and not on the strand: client_gone() and
// OnClientGone() answer synchronously on the caller's thread, and a call
// that does not count must cost nothing (no post).
// Thread-safety: every method is thread-safe and never blocks on I/O (a
// mutex guards a few fields; posts to the strand happen under it so that
// the strand sees the calls in the order they were accepted).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/http/http_server.h"

namespace tandem::http {

class Connection;

class ResponderImpl final : public Responder {
 public:
  ResponderImpl(std::shared_ptr<Connection> connection, uint64_t exchange);
  // Without a reply: the client gets 500. Mid-stream (StartStream without
  // End): what was written is sent, then the connection is closed without
  // the last chunk, so the client sees a truncated body rather than a stream
  // that looks complete.
  ~ResponderImpl() override;

  void Respond(int status, std::string content_type, std::string body, Headers headers = {}) override;
  void StartStream(int status, std::string content_type, Headers headers = {}) override;
  void Write(std::string data) override;
  void End() override;
  void OnClientGone(std::function<void()> f) override;
  bool client_gone() const override { return gone_.load(std::memory_order_acquire); }

  // Called by the connection, on its strand: the client left (or a write
  // failed, or the server stops) before the reply was complete. Runs the
  // OnClientGone callback (once, here) and ignores every later call.
  void MarkGone();

 private:
  enum class State { kNone, kStreaming, kDone };

  const std::shared_ptr<Connection> connection_;
  const uint64_t exchange_;
  std::atomic<bool> gone_{false};
  std::mutex mu_;
  State state_ = State::kNone;        // guarded by mu_
  std::function<void()> on_gone_;     // guarded by mu_
};

}  // namespace tandem::http
