// tandem::http::Server over 127.0.0.1 with a raw-socket client: exact
// response bytes, keep-alive and Connection: close, the 400 / 413 replies,
// chunked streams written from another thread, the 500 of a dropped
// Responder, client-gone detection (mid-stream, while a whole response is
// pending, callback set late), Stop() with open streams, the idle timeout,
// two event-loop threads. Every wait is bounded (socket receive timeouts,
// condition variables with deadlines).
#include "common/http/http_server.h"

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

namespace tandem::http {
namespace {

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

std::string Get(std::string_view target, std::string_view extra = "") {
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

std::unique_ptr<Server> StartServer(Handler handler, ServerOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start("127.0.0.1", 0, std::move(handler), options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(HttpServerTest, WholeResponseHasExactBytesAndRequestIsParsed) {
  std::mutex mu;
  Request seen;
  auto server = StartServer([&](Request req, std::shared_ptr<Responder> r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen = req;
    }
    r->Respond(200, "application/json", "{\"ok\":true}", {{"X-Request-Id", "abc"}, {"Bad", "a\r\nb"}});
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send("POST /v1/completions?stream=false HTTP/1.1\r\nHost: t\r\nX-Mixed-Case: Value\r\nContent-Length: 5\r\n\r\nhello");
  auto resp = c.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->head,
            "HTTP/1.1 200 OK\r\nServer: tandem\r\nContent-Type: application/json\r\nX-Request-Id: abc\r\n"
            "Content-Length: 11\r\n\r\n");
  EXPECT_EQ(resp->body, "{\"ok\":true}");
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/v1/completions?stream=false");
  EXPECT_EQ(seen.path, "/v1/completions");
  EXPECT_EQ(seen.body, "hello");
  EXPECT_EQ(seen.Header("x-mixed-case"), "Value");
  EXPECT_EQ(seen.Header("content-length"), "5");
  EXPECT_EQ(seen.Header("absent"), "");
  ASSERT_EQ(seen.headers.size(), 3u);
  EXPECT_EQ(seen.headers[0].first, "host");
}

TEST(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnectionAndA404) {
  auto server = StartServer([](Request req, std::shared_ptr<Responder> r) {
    if (req.path == "/a") return r->Respond(200, "text/plain", "A");
    r->Respond(404, "text/plain", "no route " + req.path);
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/a"));
  auto first = c.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, "A");
  EXPECT_EQ(first->head.find("Connection: close"), std::string::npos);
  c.Send(Get("/missing"));
  auto second = c.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->head,
            "HTTP/1.1 404 Not Found\r\nServer: tandem\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n");
  EXPECT_EQ(second->body, "no route /missing");
}

TEST(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto server = StartServer([](Request req, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", req.path); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/one") + Get("/two"));
  auto a = c.ReadResponse();
  auto b = c.ReadResponse();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->body, "/one");
  EXPECT_EQ(b->body, "/two");
}

TEST(HttpServerTest, ConnectionCloseAndHttp10CloseAfterTheResponse) {
  auto server = StartServer([](Request, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", "bye"); });
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    c.Send(Get("/", "Connection: close\r\n"));
    auto resp = c.ReadResponse();
    ASSERT_TRUE(resp);
    EXPECT_EQ(resp->head,
              "HTTP/1.1 200 OK\r\nServer: tandem\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
              "Connection: close\r\n\r\n");
    std::string rest;
    EXPECT_TRUE(c.WaitClosed(&rest));
    EXPECT_EQ(rest, "");
  }
  {
    Client c(server->port());
    c.Send("GET / HTTP/1.0\r\n\r\n");
    auto resp = c.ReadResponse();
    ASSERT_TRUE(resp);
    EXPECT_EQ(resp->body, "bye");
    EXPECT_NE(resp->head.find("Connection: close\r\n"), std::string::npos);
    EXPECT_TRUE(c.WaitClosed());
  }
}

TEST(HttpServerTest, TooLargeBodyGets413AndClose) {
  Counter handled;
  ServerOptions options;
  options.max_body_bytes = 1024;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) {
    handled.Add();
    r->Respond(200, "text/plain", "ok");
  }, options);
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n" + std::string(4096, 'x'));
  auto resp = c.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->head,
            "HTTP/1.1 413 Payload Too Large\r\nServer: tandem\r\nContent-Type: text/plain\r\nContent-Length: 23\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(resp->body, "request body too large\n");
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(handled.count(), 0);

  // At the limit exactly: served.
  Client ok(server->port());
  ok.Send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'x'));
  auto served = ok.ReadResponse();
  ASSERT_TRUE(served);
  EXPECT_EQ(served->status, 200);
}

TEST(HttpServerTest, GarbageGets400AndClose) {
  auto server = StartServer([](Request, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", "ok"); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("THIS IS NOT\x01 HTTP\r\n\r\n");
  auto resp = c.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->head,
            "HTTP/1.1 400 Bad Request\r\nServer: tandem\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(resp->body, "bad request\n");
  EXPECT_TRUE(c.WaitClosed());
}

TEST(HttpServerTest, StreamOf1000WritesFromAnotherThreadArrivesInOrderThenKeepAlive) {
  Held held;
  auto server = StartServer([&](Request req, std::shared_ptr<Responder> r) {
    if (req.path == "/after") return r->Respond(200, "text/plain", "after");
    r->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    held.Put(std::move(r));
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/stream"));
  std::shared_ptr<Responder> r = held.Wait(0);
  ASSERT_NE(r, nullptr);
  std::thread producer([r] {
    for (int i = 0; i < 1000; ++i) r->Write("data: " + std::to_string(i) + "\n\n");
    r->End();
    r->Write("ignored after End");
    r->Respond(500, "text/plain", "ignored");
  });
  auto resp = c.ReadResponse();
  producer.join();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->head,
            "HTTP/1.1 200 OK\r\nServer: tandem\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
  ASSERT_EQ(resp->chunks.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(resp->chunks[i], "data: " + std::to_string(i) + "\n\n");
  EXPECT_FALSE(r->client_gone());
  held.Clear();
  r.reset();
  c.Send(Get("/after"));
  auto after = c.ReadResponse();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->body, "after");
}

TEST(HttpServerTest, ChunkBytesOnTheWireAreExact) {
  auto server = StartServer([](Request, std::shared_ptr<Responder> r) {
    r->StartStream(201, "text/plain");
    r->Write("hello");
    r->Write("");  // ignored: an empty chunk would end the body
    r->Write(std::string(17, 'z'));
    r->End();
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/", "Connection: close\r\n"));
  std::string all;
  EXPECT_TRUE(c.WaitClosed(&all));
  EXPECT_EQ(all,
            "HTTP/1.1 201 Created\r\nServer: tandem\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n5\r\nhello\r\n11\r\nzzzzzzzzzzzzzzzzz\r\n0\r\n\r\n");
}

TEST(HttpServerTest, Http10StreamHasNoChunksAndEndsWithTheConnection) {
  auto server = StartServer([](Request, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/event-stream");
    r->Write("data: a\n\n");
    r->Write("data: b\n\n");
    r->End();
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("GET /stream HTTP/1.0\r\n\r\n");
  std::string all;
  EXPECT_TRUE(c.WaitClosed(&all));
  EXPECT_EQ(all,
            "HTTP/1.1 200 OK\r\nServer: tandem\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            "data: a\n\ndata: b\n\n");
}

TEST(HttpServerTest, ExpectContinueGets100BeforeTheBody) {
  auto server = StartServer([](Request req, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", req.body); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  auto interim = c.ReadHead();
  ASSERT_TRUE(interim);
  EXPECT_EQ(*interim, "HTTP/1.1 100 Continue\r\n\r\n");
  c.Send("12345");
  auto resp = c.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->body, "12345");
}

TEST(HttpServerTest, OversizedHeaderGets431AndClose) {
  auto server = StartServer([](Request, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", "ok"); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(40000, 'h') + "\r\n\r\n");
  auto resp = c.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->status, 431);
  EXPECT_EQ(resp->body, "request header fields too large\n");
  EXPECT_TRUE(c.WaitClosed());
}

TEST(HttpServerTest, DroppedResponderGives500) {
  auto server = StartServer([](Request req, std::shared_ptr<Responder> r) {
    if (req.path == "/later") {
      std::thread([r = std::move(r)] {}).detach();  // dropped on another thread
    }
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/now"));
  auto a = c.ReadResponse();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->status, 500);
  EXPECT_EQ(a->body, "internal error: the request got no response\n");
  c.Send(Get("/later"));
  auto b = c.ReadResponse();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->status, 500);
}

TEST(HttpServerTest, ResponderDroppedMidStreamClosesTheConnectionAndOnlyTheFirstReplyCounts) {
  Held held;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/event-stream");
    r->Respond(200, "text/plain", "ignored: the stream came first");
    r->StartStream(500, "text/plain");  // ignored too
    r->Write("data: only\n\n");
    held.Put(std::move(r));
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/stream"));
  ASSERT_NE(held.Wait(0), nullptr);
  held.Clear();  // the last reference goes without End()
  std::string all;
  EXPECT_TRUE(c.WaitClosed(&all));
  EXPECT_EQ(all,
            "HTTP/1.1 200 OK\r\nServer: tandem\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            "\r\nc\r\ndata: only\n\n\r\n");  // no last chunk: the client sees a truncated body
}

TEST(HttpServerTest, ClientClosingMidStreamRunsOnClientGoneOnce) {
  Held held;
  Counter gone;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) {
    r->OnClientGone([&] { gone.Add(); });
    r->StartStream(200, "text/event-stream");
    r->Write("data: first\n\n");
    held.Put(std::move(r));
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/stream"));
  std::shared_ptr<Responder> r = held.Wait(0);
  ASSERT_NE(r, nullptr);
  // Read the head and the first chunk, then leave.
  ASSERT_TRUE(c.ReadHead());
  EXPECT_EQ(c.ReadChunk(), "data: first\n\n");
  EXPECT_EQ(gone.count(), 0);
  c.Close();
  ASSERT_TRUE(gone.WaitFor(1));
  EXPECT_TRUE(r->client_gone());
  for (int i = 0; i < 100; ++i) r->Write("data: more\n\n");  // ignored
  r->End();
  // A second client-gone cannot happen: the count stays 1 once Stop has run
  // everything pending.
  server->Stop();
  EXPECT_EQ(gone.count(), 1);
}

TEST(HttpServerTest, ClientClosingWhileWholeResponsePendingRunsOnClientGone) {
  Held held;
  Counter gone;
  std::atomic<std::thread::id> callback_thread{};
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) {
    r->OnClientGone([&] {
      callback_thread = std::this_thread::get_id();
      gone.Add();
    });
    held.Put(std::move(r));  // the "engine" is still computing
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/slow"));
  std::shared_ptr<Responder> r = held.Wait(0);
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(r->client_gone());
  c.Close();
  ASSERT_TRUE(gone.WaitFor(1));
  EXPECT_TRUE(r->client_gone());
  EXPECT_NE(callback_thread.load(), std::this_thread::get_id());
  r->Respond(200, "text/plain", "too late");  // ignored
  server->Stop();
  EXPECT_EQ(gone.count(), 1);
}

TEST(HttpServerTest, OnClientGoneSetAfterTheClientLeftRunsAtOnce) {
  Held held;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) { held.Put(std::move(r)); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  c.Send(Get("/slow"));
  std::shared_ptr<Responder> r = held.Wait(0);
  ASSERT_NE(r, nullptr);
  c.Close();
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!r->client_gone() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(r->client_gone());
  bool ran = false;
  r->OnClientGone([&] { ran = true; });
  EXPECT_TRUE(ran);  // synchronously, on this thread
}

TEST(HttpServerTest, StopWithOpenStreamsRunsCallbacksAndReturns) {
  Held held;
  Counter gone;
  constexpr int kStreams = 5;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/event-stream");
    std::weak_ptr<Responder> weak = r;
    r->OnClientGone([&, weak] {
      // Calls into the responder from the callback must not deadlock Stop.
      if (auto self = weak.lock()) {
        self->Write("after stop");
        self->End();
        EXPECT_TRUE(self->client_gone());
      }
      gone.Add();
    });
    held.Put(std::move(r));
  });
  ASSERT_NE(server, nullptr);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.push_back(std::make_unique<Client>(server->port()));
    clients.back()->Send(Get("/stream"));
    ASSERT_NE(held.Wait(static_cast<size_t>(i)), nullptr);
  }
  std::thread stopper([&] { server->Stop(); });
  stopper.join();  // returns: the test's own timeout bounds a deadlock
  EXPECT_EQ(gone.count(), kStreams);
  for (auto& c : clients) {
    auto resp = c->ReadResponse();
    EXPECT_FALSE(resp);  // the head arrived, the stream never ended
  }
  server->Stop();  // idempotent
  EXPECT_EQ(gone.count(), kStreams);
}

TEST(HttpServerTest, IdleTimeoutClosesASilentConnectionButNotAPendingReply) {
  Held held;
  ServerOptions options;
  options.idle_timeout = 200ms;
  auto server = StartServer([&](Request, std::shared_ptr<Responder> r) { held.Put(std::move(r)); }, options);
  ASSERT_NE(server, nullptr);
  Client silent(server->port());
  Client trickling(server->port());
  trickling.Send("GET / HTTP/1.1\r\nHost:");
  Client waiting(server->port());
  waiting.Send(Get("/slow"));
  std::shared_ptr<Responder> r = held.Wait(0);
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(silent.WaitClosed());
  EXPECT_TRUE(trickling.WaitClosed());
  // The pending reply outlived several idle timeouts.
  EXPECT_FALSE(r->client_gone());
  r->Respond(200, "text/plain", "late");
  auto resp = waiting.ReadResponse();
  ASSERT_TRUE(resp);
  EXPECT_EQ(resp->body, "late");
}

TEST(HttpServerTest, TwoThreadsServeConcurrentClients) {
  ServerOptions options;
  options.threads = 2;
  std::mutex mu;
  std::set<std::thread::id> threads;
  auto server = StartServer([&](Request req, std::shared_ptr<Responder> r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      threads.insert(std::this_thread::get_id());
    }
    // Replies from another thread too.
    std::thread([r = std::move(r), body = req.path] { r->Respond(200, "text/plain", body); }).detach();
  }, options);
  ASSERT_NE(server, nullptr);
  constexpr int kClients = 8, kRequests = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      Client c(server->port());
      for (int j = 0; j < kRequests; ++j) {
        const std::string path = "/c" + std::to_string(i) + "/" + std::to_string(j);
        c.Send(Get(path));
        auto resp = c.ReadResponse();
        if (resp && resp->status == 200 && resp->body == path) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_GE(threads.size(), 1u);
  EXPECT_LE(threads.size(), 2u);
}

TEST(HttpServerTest, StartOnABusyPortIsUnavailable) {
  auto first = StartServer([](Request, std::shared_ptr<Responder> r) { r->Respond(200, "text/plain", ""); });
  ASSERT_NE(first, nullptr);
  auto second = Server::Start("127.0.0.1", first->port(), [](Request, std::shared_ptr<Responder>) {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("127.0.0.1:" + std::to_string(first->port())), std::string::npos);
}

}  // namespace
}  // namespace tandem::http
