// MetricsServer: a tiny HTTP/1.1 server for Prometheus scrapes. GET /metrics
// answers 200 with the registry's text (format 0.0.4); another path on GET,
// 404; another method, 405; a malformed request line, 400; a request head
// over max_request_bytes, 431; a head not complete within read_timeout, 408.
// Every connection is closed after one answer.
//
// Why this shape: Prometheus scrapes each target every few seconds, one
// request at a time, so one thread serving one connection after another is
// enough, and it keeps the server out of the data plane entirely. Each
// connection is bounded (read_timeout for the head and again for writing the
// answer, max_request_bytes), so a slow or hostile client delays scrapes by
// at most those bounds and can never grow memory or hang the thread; Stop()
// interrupts even a connection in progress.
//
// Thread-safety: port() and address() may be called from any thread; Stop()
// (also run by the destructor) from any thread but the server's own.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/metrics/registry.h"

namespace tandem::metrics {

struct MetricsServerOptions {
  // A numeric IPv4 or IPv6 address (no host names): "127.0.0.1", "::1",
  // "0.0.0.0" to serve on every interface.
  std::string bind_address = "127.0.0.1";
  // 0 picks a free port; port() says which.
  int port = 0;
  // Longest wait for a whole request head, and again for sending the answer.
  std::chrono::milliseconds read_timeout{5000};
  // Longest request head accepted (Prometheus sends a few hundred bytes).
  size_t max_request_bytes = 8192;
};

class MetricsServer {
 public:
  // Binds, listens and starts the serving thread. `registry` is borrowed and
  // must outlive the server. InvalidArgument for a bad address, port or
  // option; Unavailable when the address cannot be bound; Internal when the
  // OS refuses a socket, pipe or thread.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const Registry* registry,
                                                              MetricsServerOptions options);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the one picked when options.port was 0).
  int port() const { return port_; }
  // "address:port" ("[::1]:port" for IPv6), for logs and scrape configs.
  std::string address() const;

  // Stops serving: interrupts the connection in progress, joins the thread,
  // closes the sockets. Idempotent; after it returns nothing is listening.
  void Stop();

 private:
  MetricsServer(const Registry* registry, MetricsServerOptions options, int listen_fd, int port, int wake_read_fd,
                int wake_write_fd);
  void Run();
  void ServeConnection(int fd);
  // Waits (bounded by `deadline`) until `fd` has `events` or Stop() is called.
  // Returns true when `fd` is ready, false on timeout, stop or error.
  bool WaitFor(int fd, short events, std::chrono::steady_clock::time_point deadline) const;
  bool SendAll(int fd, const std::string& data, std::chrono::steady_clock::time_point deadline) const;
  std::string Answer(absl::string_view head) const;

  const Registry* const registry_;
  const MetricsServerOptions options_;
  const int listen_fd_;
  const int port_;
  // A pipe whose read end becomes readable when Stop() is called: the
  // serving thread polls it beside every socket it waits on.
  const int wake_read_fd_;
  const int wake_write_fd_;
  std::once_flag stop_once_;
  std::thread thread_;
};

}  // namespace tandem::metrics
