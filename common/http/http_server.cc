// Server on Boost.Asio (see http_server.h): the acceptor and the event-loop
// threads. Each accepted connection gets its own strand on the one
// io_context (connection.h); the acceptor has a strand of its own.
// Thread-safety: Start and Stop may be called from any thread except the
// server's own (a handler or an OnClientGone callback must not Stop the
// server: Stop joins the threads).
#include "common/http/http_server.h"

#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/http/connection.h"
#include "common/http/server_state.h"

namespace tandem::http {
namespace {

namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

// After an accept error (say out of file descriptors), how long to wait
// before accepting again rather than spinning on the error.
constexpr std::chrono::milliseconds kAcceptRetry{50};

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(std::shared_ptr<ServerState> state)
      : state_(std::move(state)),
        acceptor_(net::make_strand(state_->io)),
        retry_(acceptor_.get_executor()) {}

  ~ServerImpl() override { Stop(); }

  absl::Status Listen(const std::string& host, int port) {
    const std::string where = absl::StrCat(host, ":", port);
    boost::system::error_code ec;
    tcp::resolver resolver(state_->io);
    const auto results = resolver.resolve(host, std::to_string(port),
                                          tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec ? ec.message() : "no address"));
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    if (acceptor_.open(endpoint.protocol(), ec); !ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (!ec) port_ = acceptor_.local_endpoint(ec).port();
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
    return absl::OkStatus();
  }

  void Run(int threads) {
    Accept();
    for (int i = 0; i < std::max(1, threads); ++i) {
      threads_.emplace_back([state = state_] {
        // run() returns once nothing is left to do (after Stop). An
        // exception out of application code (a callback) is dropped and
        // the loop goes on.
        for (;;) {
          try {
            state->io.run();
            return;
          } catch (...) {
          }
        }
      });
    }
  }

  int port() const override { return port_; }

  void Stop() override {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    // Keeps the threads' run() going until every Abort below is posted: a
    // connection collected here may close by itself meanwhile, and with the
    // acceptor closed that can leave the io_context without work; an Abort
    // posted after the threads have returned would never run (and its
    // handler would hold the connection, and so the io_context, forever).
    auto guard = net::make_work_guard(state_->io);
    std::vector<std::shared_ptr<Connection>> open;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stopping = true;
      for (const auto& [id, weak] : state_->connections) {
        if (auto c = weak.lock()) open.push_back(std::move(c));
      }
    }
    net::post(acceptor_.get_executor(), [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      retry_.cancel();
    });
    // Each closes on its strand and runs its pending OnClientGone there;
    // the threads run until all of that is done.
    for (const auto& c : open) c->Abort();
    open.clear();
    guard.reset();
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Accept() {
    acceptor_.async_accept(net::make_strand(state_->io),
                           [this](boost::system::error_code ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
  }

  void OnAccept(boost::system::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      retry_.expires_after(kAcceptRetry);
      retry_.async_wait([this](boost::system::error_code ec) {
        if (!ec && acceptor_.is_open()) Accept();
      });
      return;
    }
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->stopping) return;  // the socket closes as it goes out of scope
      const uint64_t id = state_->next_id++;
      connection = std::make_shared<Connection>(std::move(socket), state_, id);
      state_->connections.emplace(id, connection);
    }
    connection->Start();
    Accept();
  }

  // Declared first, destroyed last: the acceptor and timer live on its io_context.
  const std::shared_ptr<ServerState> state_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;
  int port_ = 0;
  std::vector<std::thread> threads_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // guarded by stop_mu_
};

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const std::string& host, int port, Handler handler,
                                                      ServerOptions options) {
  auto server = std::make_unique<ServerImpl>(std::make_shared<ServerState>(std::move(handler), options));
  if (absl::Status s = server->Listen(host, port); !s.ok()) return s;
  server->Run(options.threads);
  return server;
}

}  // namespace tandem::http
