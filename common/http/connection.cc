// Connection (see connection.h).
#include "common/http/connection.h"

#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/http/responder_impl.h"
#include "common/http/wire_format.h"

namespace tandem::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

// Read size of the watch on a connection whose reply is pending.
constexpr size_t kWatchReadBytes = 4096;

// Debian's Abseil has its own string_view, and so has Beast.
absl::string_view View(beast::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

Connection::Connection(tcp::socket socket, std::shared_ptr<ServerState> state, uint64_t id)
    : state_(std::move(state)), id_(id), executor_(socket.get_executor()), stream_(std::move(socket)) {}

void Connection::Start() {
  // Tokens are small writes that must leave at once: no Nagle delay.
  beast::error_code ec;
  stream_.socket().set_option(tcp::no_delay(true), ec);
  net::post(executor_, [self = shared_from_this()] { self->ReadRequest(); });
}

void Connection::Abort() {
  net::post(executor_, [self = shared_from_this()] { self->Gone(); });
}

void Connection::Post(uint64_t exchange, ReplyPiece piece) {
  net::post(executor_, [self = shared_from_this(), exchange, piece = std::move(piece)]() mutable {
    self->OnPiece(exchange, std::move(piece));
  });
}

// --- Reading a request -----------------------------------------------------

void Connection::ReadRequest() {
  if (closed_) return;
  parser_.emplace();
  parser_->header_limit(kHeaderLimit);
  parser_->body_limit(static_cast<uint64_t>(state_->options.max_body_bytes));
  // One deadline for the whole request (head and body), set once.
  stream_.expires_after(state_->options.idle_timeout);
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Connection::OnHeader(beast::error_code ec) {
  if (closed_) return;
  if (ec) return OnReadError(ec);
  // A client that asks before sending its body (curl does for large
  // bodies) would otherwise wait a second for nothing.
  if (!parser_->is_done() && absl::EqualsIgnoreCase(View(parser_->get()[bhttp::field::expect]), "100-continue")) {
    continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
    net::async_write(stream_, net::buffer(continue_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (self->closed_) return;
      if (ec) return self->Close();
      self->ReadBody();
    });
    return;
  }
  ReadBody();
}

void Connection::ReadBody() {
  if (parser_->is_done()) return OnRequest({});
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
}

void Connection::OnReadError(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) return ErrorReply(413, "request body too large\n");
  if (ec == bhttp::error::header_limit) return ErrorReply(431, "request header fields too large\n");
  // The client closed between requests, or mid-request, or was silent past
  // idle_timeout, or the socket failed: nothing to answer to.
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
      ec.category() != bhttp::make_error_code(bhttp::error::bad_method).category()) {
    return Close();
  }
  ErrorReply(400, "bad request\n");  // anything else the parser rejects
}

void Connection::ErrorReply(int status, std::string_view text) {
  // No responder: an exchange of the server's own that closes when written.
  exchange_ = ++last_exchange_;
  keep_alive_ = false;
  final_queued_ = true;
  parser_.reset();
  // The client has idle_timeout to take the reply.
  stream_.expires_after(state_->options.idle_timeout);
  Enqueue(PlainTextReply(status, text));
  Pump();
}

void Connection::OnRequest(beast::error_code ec) {
  if (closed_) return;
  if (ec) return OnReadError(ec);
  stream_.expires_never();  // a reply in progress is never timed out
  bhttp::request<bhttp::string_body> message = parser_->release();
  parser_.reset();

  Request request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  request.path = request.target.substr(0, request.target.find('?'));
  for (const auto& field : message) {
    request.headers.emplace_back(absl::AsciiStrToLower(View(field.name_string())), std::string(field.value()));
  }
  request.body = std::move(message.body());

  keep_alive_ = message.keep_alive();  // HTTP/1.0 without keep-alive, or Connection: close
  http10_ = message.version() < 11;
  exchange_ = ++last_exchange_;
  streaming_ = false;
  final_queued_ = false;
  auto responder = std::make_shared<ResponderImpl>(shared_from_this(), exchange_);
  responder_ = responder;
  StartWatch();
  try {
    state_->handler(std::move(request), std::move(responder));
  } catch (...) {
    // A handler that throws has dropped its responder (500) or kept it to
    // reply later; either way the connection goes on.
  }
}

// --- Writing the reply -----------------------------------------------------

void Connection::OnPiece(uint64_t exchange, ReplyPiece piece) {
  if (closed_ || exchange == 0 || exchange != exchange_ || final_queued_) return;
  using Kind = ReplyPiece::Kind;
  switch (piece.kind) {
    case Kind::kRespond:
      if (streaming_) return;
      Enqueue(ResponseHead(piece.status, piece.content_type, piece.headers, Framing::kContentLength,
                           piece.data.size(), keep_alive_));
      if (!piece.data.empty()) Enqueue(std::move(piece.data));
      final_queued_ = true;
      break;
    case Kind::kStartStream:
      if (streaming_) return;
      streaming_ = true;
      // HTTP/1.0 has no chunked encoding: the body runs to the close.
      if (http10_) keep_alive_ = false;
      Enqueue(ResponseHead(piece.status, piece.content_type, piece.headers,
                           http10_ ? Framing::kUntilClose : Framing::kChunked, 0, keep_alive_));
      break;
    case Kind::kWrite:
      if (!streaming_ || piece.data.empty()) return;
      Enqueue(http10_ ? std::move(piece.data) : Chunk(piece.data));
      break;
    case Kind::kEnd:
      if (!streaming_) return;
      if (!http10_) Enqueue(std::string(kLastChunk));
      final_queued_ = true;
      break;
    case Kind::kAbandon:
      // Its responder is gone mid-stream: what was written goes out, then
      // the connection closes without the last chunk, so the client sees
      // a truncated body rather than one that looks complete.
      keep_alive_ = false;
      final_queued_ = true;
      break;
  }
  Pump();
}

void Connection::Enqueue(std::string bytes) { queue_.push_back(std::move(bytes)); }

void Connection::Pump() {
  if (closed_ || write_in_flight_) return;
  if (queue_.empty()) {
    if (exchange_ != 0 && final_queued_) ReplyDone();
    return;
  }
  // Everything queued goes in one gathered write.
  writing_.clear();
  while (!queue_.empty()) {
    writing_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  write_buffers_.clear();
  for (const std::string& s : writing_) write_buffers_.push_back(net::buffer(s));
  write_in_flight_ = true;
  net::async_write(stream_, write_buffers_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWritten(ec); });
}

void Connection::OnWritten(beast::error_code ec) {
  write_in_flight_ = false;
  if (closed_) return;
  if (ec) return Gone();  // the client cannot be written to: it is gone
  writing_.clear();
  Pump();
}

void Connection::ReplyDone() {
  exchange_ = 0;
  responder_.reset();
  streaming_ = false;
  final_queued_ = false;
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    stopping = state_->stopping;
  }
  AfterWatchOrNow(keep_alive_ && !stopping ? AfterWatch::kReadRequest : AfterWatch::kLinger);
}

// --- Watching the socket while a reply is pending ----------------------------

void Connection::StartWatch() {
  watching_ = true;
  stream_.async_read_some(buffer_.prepare(kWatchReadBytes), [self = shared_from_this()](beast::error_code ec,
                                                                                        size_t n) {
    self->OnWatch(ec, n);
  });
}

void Connection::OnWatch(beast::error_code ec, size_t n) {
  watching_ = false;
  if (!ec) buffer_.commit(n);
  if (closed_) return;
  if (lingering_) {
    lingered_bytes_ += n;
    buffer_.clear();
    if (ec || lingered_bytes_ > kMaxLingerBytes) return Close();
    return StartWatch();
  }
  if (const AfterWatch next = std::exchange(after_watch_, AfterWatch::kNothing); next != AfterWatch::kNothing) {
    // The reply is complete; the watch was cancelled to go on (or it saw
    // data or the client's close just before).
    if (ec && ec != net::error::operation_aborted) return Close();
    return AfterWatchOrNow(next);
  }
  if (ec) return Gone();  // EOF or error while the reply is pending
  if (buffer_.size() > kMaxPipelinedBytes) return Gone();
  StartWatch();
}

void Connection::AfterWatchOrNow(AfterWatch next) {
  if (watching_) {
    after_watch_ = next;
    beast::error_code ec;
    stream_.socket().cancel(ec);
    return;
  }
  switch (next) {
    case AfterWatch::kReadRequest:
      return ReadRequest();
    case AfterWatch::kLinger:
      return StartLinger();
    case AfterWatch::kNothing:
      return;
  }
}

void Connection::StartLinger() {
  // Send FIN, then read and drop what the client still sends (bounded in
  // time and bytes): closing with unread data would reset the connection,
  // and a reset can destroy the reply before the client has read it.
  lingering_ = true;
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  buffer_.clear();
  stream_.expires_after(kLingerTime);
  StartWatch();
}

// --- Closing ---------------------------------------------------------------

void Connection::Gone() {
  if (closed_) return;
  std::shared_ptr<ResponderImpl> responder = exchange_ != 0 ? responder_.lock() : nullptr;
  Close();
  if (responder) responder->MarkGone();  // runs OnClientGone here, on the strand
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  queue_.clear();
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();  // pending operations end with operation_aborted
  state_->Forget(id_);
}

}  // namespace tandem::http
