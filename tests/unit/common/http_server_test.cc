// tandem::http::Server over 127.0.0.1 with a raw-socket client, whole
// requests and replies: exact response bytes, keep-alive, pipelining,
// Connection: close and HTTP/1.0, the 400 / 413 / 431 replies, Expect:
// 100-continue, two event-loop threads, a busy port. Streams and the
// client-gone paths: http_server_stream_test.cc. Every wait is bounded.
#include "common/http/http_server.h"

#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/common/http_test_client.h"

namespace tandem::http {
namespace {

using namespace test;
using namespace std::chrono_literals;

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
