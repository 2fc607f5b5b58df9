// MetricsServer: GET /metrics over HTTP on civetweb (the server under
// prometheus-cpp's pull Exposer, a dependency of Debian's prometheus-cpp-dev),
// answering 200 with a collectable's text (text_serializer.h) made at that
// moment; other paths get 404.
//
// Why not prometheus::Exposer itself: it always serializes with
// prometheus::TextSerializer, whose 16-digit values do not read back
// exactly (text_serializer.h). Everything else is civetweb's: the socket,
// its threads (2 here), HTTP parsing, a request must arrive within 5 s.
// What this adds:
//  - absl::Status errors instead of exceptions, with civetweb's reason
//    ("cannot bind to 127.0.0.1:9400: 98 (Address already in use)");
//  - a numeric IPv4 or IPv6 bind address turned into civetweb's port syntax,
//    and the bound port read back (port 0 picks a free one);
//  - Stop(): after it returns no scrape is running or will run, so what the
//    collectable reads may be destroyed; it takes milliseconds (civetweb
//    alone notices a stop only every 2 s).
//
// Thread-safety: port() and address() may be called from any thread; Stop()
// (also run by the destructor) from any thread but a scraping one.
#pragma once

#include <sys/socket.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

class CivetServer;

namespace tandem::metrics {

class MetricsServer {
 public:
  // Serves `collectable` (borrowed: it must outlive the server) on
  // http://`bind_address`:`port`/metrics. `bind_address` is a numeric IPv4
  // or IPv6 address ("127.0.0.1", "::1", "0.0.0.0", "::" for every
  // interface; no host names). InvalidArgument for a bad address or port;
  // Unavailable when it cannot be bound; FailedPrecondition for an IPv6
  // address where civetweb was built without IPv6 (Debian 12's is).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const prometheus::Collectable* collectable,
                                                              const std::string& bind_address, int port);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the one picked when 0 was asked for).
  int port() const { return port_; }
  // "address:port" ("[::1]:port" for IPv6), for logs and scrape configs.
  const std::string& address() const { return address_; }

  // Stops serving: waits for a scrape in progress, joins civetweb's threads,
  // closes the socket. Idempotent.
  void Stop();

 private:
  class Handler;
  MetricsServer(std::unique_ptr<Handler> handler, std::unique_ptr<CivetServer> server, const sockaddr_storage& wake,
                int port, std::string address);

  std::once_flag stop_once_;
  const std::unique_ptr<Handler> handler_;  // outlives server_
  std::unique_ptr<CivetServer> server_;
  // Where Stop() connects to wake civetweb's listening thread.
  const sockaddr_storage wake_;
  const int port_;
  const std::string address_;
};

}  // namespace tandem::metrics
