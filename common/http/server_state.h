// What a Server shares with its connections: the handler, the options and
// the registry of open connections that Stop() closes.
//
// Why shared (shared_ptr): a Responder the application still holds keeps its
// connection object alive after the Server is gone; that connection must
// still find the io_context it was created on and the registry it leaves.
// Thread-safety: handler and options are immutable after Start; the
// registry is guarded by `mu`.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <boost/asio/io_context.hpp>

#include "common/http/http_server.h"

namespace tandem::http {

class Connection;

struct ServerState {
  ServerState(Handler h, ServerOptions o) : handler(std::move(h)), options(o) {}

  const Handler handler;
  const ServerOptions options;
  // Every connection's socket and strand live on this io_context.
  boost::asio::io_context io{};

  std::mutex mu;
  bool stopping = false;  // guarded by mu: once set, accepted sockets are closed at once
  uint64_t next_id = 1;   // guarded by mu
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> connections;  // guarded by mu

  // Removes connection `id` from the registry (a connection that closed).
  void Forget(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu);
    connections.erase(id);
  }
};

}  // namespace tandem::http
