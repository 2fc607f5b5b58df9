// The raw-socket client and helpers of the http::Server tests
// (http_server_test.cc, http_server_stream_test.cc): a blocking client on one
// connection, a bounded counter, responders a handler holds for the test
// thread, and a server on 127.0.0.1 with a free port. Every wait is bounded
// by kWait. Header-only.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

#include "common/http/http_server.h"

namespace tandem::http::test {

using namespace std::chrono_literals;
constexpr auto kWait = 5s;  // the bound on every wait

// A blocking client on one connection; reads time out after kWait.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{static_cast<time_t>(std::chrono::seconds(kWait).count()), 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { Close(); }
  bool connected() const { return connected_; }

  void Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  struct Response {
    int status = 0;
    std::string head;  // status line and headers, through the blank line
    std::string body;  // de-chunked
    std::vector<std::string> chunks;
    bool chunked = false;
  };

  // The next whole response (Content-Length or chunked), or nullopt when the
  // connection closed or timed out first.
  std::optional<Response> ReadResponse() {
    Response r;
    std::optional<std::string> head = ReadHead();
    if (!head || head->size() < 12) return std::nullopt;
    r.head = std::move(*head);
    r.status = std::stoi(r.head.substr(9, 3));
    if (r.head.find("Transfer-Encoding: chunked\r\n") != std::string::npos) {
      r.chunked = true;
      for (int i = 0; i < 1000000; ++i) {
        std::optional<std::string> chunk = ReadChunk();
        if (!chunk) return std::nullopt;
        if (chunk->empty()) return r;
        r.body += *chunk;
        r.chunks.push_back(std::move(*chunk));
      }
      return std::nullopt;
    }
    size_t length = 0;
    if (const size_t p = r.head.find("Content-Length: "); p != std::string::npos) {
      length = std::stoul(r.head.substr(p + 16));
    }
    if (!ReadExactly(length, &r.body)) return std::nullopt;
    return r;
  }

  // The status line and headers through the blank line.
  std::optional<std::string> ReadHead() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    std::string head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    return head;
  }

  // The next chunk's data ("" for the last chunk), nullopt on close/timeout.
  std::optional<std::string> ReadChunk() {
    size_t eol;
    while ((eol = buf_.find("\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    const size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
    buf_.erase(0, eol + 2);
    std::string data;
    std::string crlf;
    if (!ReadExactly(size, &data) || !ReadExactly(2, &crlf) || crlf != "\r\n") return std::nullopt;
    return data;
  }

  // True when the server closes the connection (EOF or reset) within kWait;
  // what arrives before is appended to `rest`.
  bool WaitClosed(std::string* rest = nullptr) {
    for (int i = 0; i < 100000; ++i) {
      char b[4096];
      const ssize_t n = recv(fd_, b, sizeof(b), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      if (rest != nullptr) rest->append(b, static_cast<size_t>(n));
    }
    return false;
  }

 private:
  bool Fill() {
    char b[65536];
    const ssize_t n = recv(fd_, b, sizeof(b), 0);
    if (n <= 0) return false;
    buf_.append(b, static_cast<size_t>(n));
    return true;
  }
  bool ReadExactly(size_t n, std::string* out) {
    while (buf_.size() < n) {
      if (!Fill()) return false;
    }
    out->append(buf_, 0, n);
    buf_.erase(0, n);
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

inline std::string Get(std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra) + "\r\n";
}

// Counts events and lets a test wait (bounded) for a count.
class Counter {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++n_;
    cv_.notify_all();
  }
  bool WaitFor(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return n_ >= n; });
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return n_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_ = 0;
};

// Responders the handler kept, for the test thread to reply through.
class Held {
 public:
  void Put(std::shared_ptr<Responder> r) {
    std::lock_guard<std::mutex> lock(mu_);
    held_.push_back(std::move(r));
    cv_.notify_all();
  }
  // The i-th held responder (waits for it), nullptr after kWait.
  std::shared_ptr<Responder> Wait(size_t i) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kWait, [&] { return held_.size() > i; })) return nullptr;
    return held_[i];
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Responder>> held_;
};

inline std::unique_ptr<Server> StartServer(Handler handler, ServerOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start("127.0.0.1", 0, std::move(handler), options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}
}  // namespace tandem::http::test
