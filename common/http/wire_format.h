// The bytes of an HTTP/1.1 response as the server writes them: the status
// line and headers, chunks of a chunked body, and the plain-text replies to
// requests that cannot be served (400, 413, 431).
//
// Why by hand and not Beast's serializer: a streamed reply is written one
// chunk at a time from a queue of strings (one async_write for everything
// queued), and the exact bytes of every chunk are part of the contract the
// tests check.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/http/http_server.h"

namespace tandem::http {

// How the body that follows the head is framed.
enum class Framing {
  kContentLength,  // `content_length` bytes
  kChunked,        // Transfer-Encoding: chunked
  kUntilClose,     // no length: the body ends when the connection closes (HTTP/1.0 streams)
};

// Status line and headers, ending with the blank line. Always sets Server,
// Content-Type (when not empty) and the framing; `Connection: close` when
// !keep_alive. Extra headers are passed through except those that would
// break the framing (Content-Length, Transfer-Encoding, Connection, Server)
// or carry CR/LF (header injection); those are dropped.
std::string ResponseHead(int status, std::string_view content_type, const Headers& extra, Framing framing,
                         size_t content_length, bool keep_alive);

// One chunk of a chunked body ("<hex size>\r\n<data>\r\n"); `data` must not be empty.
std::string Chunk(std::string_view data);

// The chunk that ends a chunked body (no trailers).
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A complete text/plain reply that closes the connection.
std::string PlainTextReply(int status, std::string_view text);

}  // namespace tandem::http
