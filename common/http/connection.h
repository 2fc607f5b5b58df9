// Connection: one accepted TCP connection. It reads requests one after the
// other (keep-alive), hands each to the handler with a ResponderImpl, writes
// the reply that responder forwards, and watches the socket while the reply
// is pending so that a client that leaves is noticed at once.
//
// Life of a connection (all on its strand):
//   ReadRequest  -- idle_timeout runs -- header (100-continue) -- body
//     -> parse error: 400 / 413 / 431 as plain text, then close (lingering)
//     -> request: handler(request, responder); watch the socket; write the
//        reply's pieces as they come (one async_write in flight, everything
//        queued goes in it); when the last byte is written: the next
//        ReadRequest (keep-alive), or close.
// Pipelining: bytes the client sends while a reply is pending are kept in
// the read buffer and parsed as the next request (up to kMaxPipelinedBytes;
// beyond that the client is treated as gone and the connection closed).
// The stream write queue is not bounded here: its producer (the engine,
// through the router) is bounded by the request's max_tokens.
// Thread-safety: Start, Abort and Post may be called from any thread;
// everything else runs on the strand.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "common/http/http_server.h"
#include "common/http/server_state.h"

namespace tandem::http {

class ResponderImpl;

// One reply call that a ResponderImpl accepted, on its way to the strand.
struct ReplyPiece {
  enum class Kind { kRespond, kStartStream, kWrite, kEnd, kAbandon };
  Kind kind{};
  int status = 0;
  std::string content_type{};
  std::string data{};  // Respond's body or Write's chunk
  Headers headers{};
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  // Longest request head accepted (431 beyond).
  static constexpr uint32_t kHeaderLimit = 32 * 1024;
  // Most bytes kept from a client that sends ahead while a reply is pending.
  static constexpr size_t kMaxPipelinedBytes = 64 * 1024;
  // After the last reply of a closing connection, how long and how much of
  // the client's leftovers are read and dropped (so that the close does not
  // reset the connection before the client has read the reply).
  static constexpr std::chrono::milliseconds kLingerTime{1000};
  static constexpr size_t kMaxLingerBytes = 1 << 20;

  Connection(boost::asio::ip::tcp::socket socket, std::shared_ptr<ServerState> state, uint64_t id);

  void Start();
  // The server stops: the pending reply's client is gone; close.
  void Abort();
  // Queues `piece` of exchange `exchange` to the strand (ignored there if
  // that exchange is over or the connection closed).
  void Post(uint64_t exchange, ReplyPiece piece);

 private:
  // What to do once the watch read (in flight) has been cancelled.
  enum class AfterWatch { kNothing, kReadRequest, kLinger };

  void ReadRequest();
  void OnHeader(boost::beast::error_code ec);
  void ReadBody();
  void OnRequest(boost::beast::error_code ec);
  void OnReadError(boost::beast::error_code ec);
  void ErrorReply(int status, std::string_view text);

  void OnPiece(uint64_t exchange, ReplyPiece piece);
  void Enqueue(std::string bytes);
  void Pump();
  void OnWritten(boost::beast::error_code ec);
  void ReplyDone();

  void StartWatch();
  void OnWatch(boost::beast::error_code ec, size_t n);
  void AfterWatchOrNow(AfterWatch next);
  void StartLinger();

  void Gone();
  void Close();

  const std::shared_ptr<ServerState> state_;
  const uint64_t id_;
  // The connection's strand; a copy, so that other threads post to it
  // without touching stream_.
  const boost::asio::any_io_executor executor_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::string continue_;  // the "100 Continue" interim reply while it is written

  bool closed_ = false;
  bool lingering_ = false;
  size_t lingered_bytes_ = 0;

  // The exchange whose reply is pending (0: none), and its responder.
  uint64_t exchange_ = 0;
  uint64_t last_exchange_ = 0;
  std::weak_ptr<ResponderImpl> responder_;
  bool keep_alive_ = true;
  bool http10_ = false;
  bool streaming_ = false;
  bool final_queued_ = false;  // the reply's last bytes are queued

  std::deque<std::string> queue_;
  std::vector<std::string> writing_;  // the batch of the async_write in flight
  std::vector<boost::asio::const_buffer> write_buffers_;
  bool write_in_flight_ = false;

  bool watching_ = false;
  AfterWatch after_watch_ = AfterWatch::kNothing;
};

}  // namespace tandem::http
