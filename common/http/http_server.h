// A small HTTP/1.1 server for Tandem's public HTTP API (the OpenAI-compatible
// routes), on Boost.Beast over Boost.Asio (Debian 12's libboost1.74-dev).
//
// Why Beast/Asio: the API streams tokens as server-sent events, and a busy
// router holds hundreds of such streams open at once. Asio multiplexes every
// connection over a few threads (epoll), so an idle or slow stream costs a
// socket and a buffer, never a thread; the thread-per-connection servers in
// Debian (civetweb, cpp-httplib) stall the rest once their pool is taken by
// open streams.
//
// Model: the handler runs on one of the server's threads for each complete
// request and must not block: it validates, hands the work off, and replies
// later, from any thread, through the Responder. A connection serves its
// requests one after the other (keep-alive); while a reply is pending the
// server watches the socket, so a client that goes away is noticed at once
// (not at the next write) and the handler's OnClientGone callback runs.
//
// Bytes a client sends while a reply is pending (pipelining) are kept, up to
// 64 KiB, and read as its next request; beyond that the client counts as
// gone. The client closing its sending side (EOF) while a reply is pending
// counts as gone too. A stream's queue of unwritten chunks is not bounded
// here: the producer is (a generation's max_tokens).
//
// Thread-safety: Server's methods are thread-safe, but Stop() (and so the
// destructor) must not run on a server thread (a handler or an OnClientGone
// callback): it joins them. A Responder may be used from any thread; its
// calls take effect in the order they were made.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::http {

struct Request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // as sent: path and query
  std::string path;    // target without "?query"
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;

  // The first header named `name` (lower case), "" when absent.
  std::string_view Header(std::string_view name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// The reply to one request. Exactly one of Respond() or StartStream() counts
// (later reply calls are ignored). If the last reference is dropped without
// a reply, the client gets 500; dropped mid-stream (no End()), what was
// written is sent and the connection closes without the last chunk (the
// client sees a truncated body). Never blocks: writes are queued to the
// connection's thread.
class Responder {
 public:
  virtual ~Responder() = default;

  // A whole response with Content-Length.
  virtual void Respond(int status, std::string content_type, std::string body, Headers headers = {}) = 0;

  // Starts a streamed response (chunked transfer encoding); Write() sends
  // each piece as one chunk (an empty piece is ignored), End() the last
  // chunk. After End() the connection reads the client's next request. An
  // HTTP/1.0 client gets the pieces unframed, ended by the close.
  virtual void StartStream(int status, std::string content_type, Headers headers = {}) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;

  // `f` runs once, on a server thread, if the client closes the connection
  // (or a write to it fails, or the server stops) before the response is
  // complete; at once (on the calling thread) if that already happened. Set
  // it before starting the work it should cancel. It must not block.
  virtual void OnClientGone(std::function<void()> f) = 0;
  // True once the client is gone (the writes go nowhere).
  virtual bool client_gone() const = 0;
};

using Handler = std::function<void(Request request, std::shared_ptr<Responder> responder)>;

struct ServerOptions {
  int threads = 1;                         // event-loop threads
  size_t max_body_bytes = size_t{8} << 20;  // larger bodies get 413
  // A connection that sends no complete request for this long is closed
  // (idle keep-alive, or a client trickling its headers); a response in
  // progress is never timed out here.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
};

class Server {
 public:
  virtual ~Server() = default;  // Stop()s

  // Listens on host:port (port 0: a free port; see port()) and starts the
  // threads. Errors: the address cannot be bound (UNAVAILABLE, naming it).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const std::string& host, int port, Handler handler,
                                                       ServerOptions options = {});

  virtual int port() const = 0;
  // Stops accepting, closes every connection (pending responders'
  // OnClientGone callbacks run), joins the threads. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace tandem::http
