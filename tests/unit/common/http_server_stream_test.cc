// tandem::http::Server's streams and reply lifecycle over 127.0.0.1: chunked
// streams written from another thread (exact bytes, order), HTTP/1.0
// streams, the 500 of a dropped Responder and a Responder dropped
// mid-stream, client-gone detection (mid-stream, while a whole response is
// pending, callback set late), Stop() with open streams, the idle timeout.
// Every wait is bounded.
#include "common/http/http_server.h"

#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/common/http_test_client.h"

namespace tandem::http {
namespace {

using namespace test;
using namespace std::chrono_literals;

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

}  // namespace
}  // namespace tandem::http
