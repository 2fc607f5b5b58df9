// tandem-sse-bench: how fast the HTTP server (common/http) delivers
// server-sent events to many concurrent streams, and what that costs in CPU.
//
// In one process: the server on 127.0.0.1 (--threads event-loop threads);
// a handler that opens a text/event-stream per request; a producer thread
// standing in for the engine that every --interval-ms writes one ~150-byte
// `data: {...}` event, stamped with steady_clock nanoseconds, to every open
// stream, --events times, then ends it; and a client (one Asio thread) that
// opens --streams connections, decodes the chunked bodies and measures, per
// event, the delay from the producer's stamp to its arrival.
// Prints the streams completed, the events received (must be
// streams*events), p50/p99/max delivery latency and the CPU seconds of the
// process (getrusage), split into client, producer and the rest (the server).
// Thread-safety: the producer's stream list is guarded by a mutex; the
// client's state lives on its one thread.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "common/http/http_server.h"

namespace {

namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Options {
  int streams = 512;
  int events = 100;
  int interval_ms = 50;
  int threads = 1;
};

bool ParseFlags(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const size_t eq = arg.find('=');
    std::string_view name = arg.substr(0, eq);
    std::string value;
    if (eq != std::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      value = argv[++i];
    }
    char* end = nullptr;
    const long v = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || v <= 0 || v > 1000000) {
      std::fprintf(stderr, "bad value for %.*s\n", static_cast<int>(name.size()), name.data());
      return false;
    }
    if (name == "--streams") o->streams = static_cast<int>(v);
    else if (name == "--events") o->events = static_cast<int>(v);
    else if (name == "--interval-ms") o->interval_ms = static_cast<int>(v);
    else if (name == "--threads") o->threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown flag %.*s (--streams --events --interval-ms --threads)\n",
                   static_cast<int>(name.size()), name.data());
      return false;
    }
  }
  return true;
}

int64_t NowNs() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// One event as an OpenAI-style completion chunk (~150 bytes), "t" last.
std::string Event(int stream, int index) {
  char buf[256];
  const int n = std::snprintf(buf, sizeof(buf),
                              "data: {\"id\":\"cmpl-%06d\",\"object\":\"text_completion\",\"created\":1733500000,"
                              "\"model\":\"tandem-bench\",\"choices\":[{\"index\":%d,\"text\":\" token\"}],"
                              "\"t\":%lld}\n\n",
                              stream, index, static_cast<long long>(NowNs()));
  return std::string(buf, static_cast<size_t>(n));
}

// The engine's side: the open streams and what each has been sent.
class Producer {
 public:
  explicit Producer(const Options& o) : options_(o) {}

  void Add(std::shared_ptr<tandem::http::Responder> r) {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back({std::move(r), 0, next_id_++});
  }

  // Every interval, one event to every open stream, until every stream has
  // been opened and ended (or the deadline passes).
  void Run(Clock::time_point deadline) {
    auto tick = Clock::now();
    for (;;) {
      tick += std::chrono::milliseconds(options_.interval_ms);
      std::this_thread::sleep_until(tick);
      std::lock_guard<std::mutex> lock(mu_);
      for (Stream& s : streams_) {
        s.responder->Write(Event(s.id, s.sent));
        if (++s.sent == options_.events) {
          s.responder->End();
          ++ended_;
        }
      }
      std::erase_if(streams_, [&](const Stream& s) { return s.sent == options_.events; });
      if (ended_ == options_.streams || Clock::now() > deadline) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    streams_.clear();
  }

 private:
  struct Stream {
    std::shared_ptr<tandem::http::Responder> responder;
    int sent;
    int id;
  };
  const Options options_;
  std::mutex mu_;
  std::vector<Stream> streams_;  // guarded by mu_
  int next_id_ = 0;              // guarded by mu_
  int ended_ = 0;                // guarded by mu_
};

// The client: one connection per stream, on one io_context thread.
class Client {
 public:
  Client(net::io_context& io, const Options& o, int port) : io_(io), options_(o), port_(port) {
    latencies_ns_.reserve(static_cast<size_t>(o.streams) * static_cast<size_t>(o.events));
  }

  void Open() {
    for (int i = 0; i < options_.streams; ++i) {
      auto c = std::make_shared<Conn>(io_);
      conns_.push_back(c);
      c->socket.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)),
                              [this, c](boost::system::error_code ec) {
                                if (ec) return Fail(c, "connect", ec);
                                c->socket.set_option(tcp::no_delay(true));
                                net::async_write(c->socket, net::buffer(kRequest),
                                                 [this, c](boost::system::error_code ec, size_t) {
                                                   if (ec) return Fail(c, "write", ec);
                                                   Read(c);
                                                 });
                              });
    }
  }

  int completed() const { return completed_; }
  int failed() const { return failed_; }
  std::vector<int64_t>& latencies_ns() { return latencies_ns_; }

 private:
  static constexpr std::string_view kRequest = "GET /v1/completions HTTP/1.1\r\nHost: bench\r\n\r\n";

  struct Conn {
    explicit Conn(net::io_context& io) : socket(io) {}
    tcp::socket socket;
    std::array<char, 16384> read_buf{};
    std::string pending;  // bytes not yet decoded
    bool head_done = false;
    int events = 0;
  };

  void Fail(const std::shared_ptr<Conn>& c, const char* what, boost::system::error_code ec) {
    if (failed_++ < 5) std::fprintf(stderr, "stream %s failed: %s\n", what, ec.message().c_str());
    boost::system::error_code ignored;
    c->socket.close(ignored);
  }

  void Read(const std::shared_ptr<Conn>& c) {
    c->socket.async_read_some(net::buffer(c->read_buf), [this, c](boost::system::error_code ec, size_t n) {
      if (ec) return Fail(c, "read", ec);
      const int64_t arrived = NowNs();
      c->pending.append(c->read_buf.data(), n);
      if (Decode(*c, arrived)) {  // the last chunk came
        ++completed_;
        boost::system::error_code ignored;
        c->socket.close(ignored);
        return;
      }
      Read(c);
    });
  }

  // Consumes whole chunks from c.pending; true at the last chunk.
  bool Decode(Conn& c, int64_t arrived) {
    size_t pos = 0;
    if (!c.head_done) {
      const size_t end = c.pending.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      c.head_done = true;
      pos = end + 4;
    }
    bool last = false;
    while (true) {
      const size_t eol = c.pending.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const size_t size = std::strtoul(c.pending.c_str() + pos, nullptr, 16);
      if (c.pending.size() < eol + 2 + size + 2) break;
      if (size == 0) {
        last = true;
        pos = eol + 4;
        break;
      }
      const std::string_view data(c.pending.data() + eol + 2, size);
      if (const size_t t = data.rfind("\"t\":"); t != std::string_view::npos) {
        latencies_ns_.push_back(arrived - std::strtoll(data.data() + t + 4, nullptr, 10));
        ++c.events;
      }
      pos = eol + 2 + size + 2;
    }
    c.pending.erase(0, pos);
    return last;
  }

  net::io_context& io_;
  const Options options_;
  const int port_;
  std::vector<std::shared_ptr<Conn>> conns_;
  std::vector<int64_t> latencies_ns_;
  int completed_ = 0;
  int failed_ = 0;
};

double Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[i]) * 1e-6;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!ParseFlags(argc, argv, &options)) return 2;
  // Two descriptors per stream (both ends live in this process).
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);

  Producer producer(options);
  tandem::http::ServerOptions server_options;
  server_options.threads = options.threads;
  auto server = tandem::http::Server::Start(
      "127.0.0.1", 0,
      [&](tandem::http::Request, std::shared_ptr<tandem::http::Responder> r) {
        r->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
        producer.Add(std::move(r));
      },
      server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }

  const auto run_time = std::chrono::milliseconds(static_cast<int64_t>(options.events) * options.interval_ms);
  const auto deadline = Clock::now() + 2 * run_time + std::chrono::seconds(30);
  const double cpu_start = ProcessCpuSeconds();
  const auto wall_start = Clock::now();

  double producer_cpu = 0;
  std::thread producer_thread([&] {
    const double start = ThreadCpuSeconds();
    producer.Run(deadline);
    producer_cpu = ThreadCpuSeconds() - start;
  });

  net::io_context io(1);
  Client client(io, options, (*server)->port());
  const double client_cpu_start = ThreadCpuSeconds();
  client.Open();
  io.run_until(deadline);
  const double client_cpu = ThreadCpuSeconds() - client_cpu_start;
  producer_thread.join();
  const double wall = std::chrono::duration<double>(Clock::now() - wall_start).count();
  const double cpu = ProcessCpuSeconds() - cpu_start;
  (*server)->Stop();

  std::vector<int64_t>& lat = client.latencies_ns();
  std::sort(lat.begin(), lat.end());
  const long long expected = static_cast<long long>(options.streams) * options.events;
  std::printf("server threads %d, streams %d, events/stream %d, interval %d ms\n", options.threads, options.streams,
              options.events, options.interval_ms);
  std::printf("streams completed %d/%d (failed %d)\n", client.completed(), options.streams, client.failed());
  std::printf("events received %zu/%lld\n", lat.size(), expected);
  std::printf("delivery latency ms: p50 %.3f  p99 %.3f  max %.3f\n", Percentile(lat, 0.50), Percentile(lat, 0.99),
              lat.empty() ? 0.0 : static_cast<double>(lat.back()) * 1e-6);
  std::printf("wall %.2f s, process CPU %.2f s (client %.2f, producer %.2f, server and rest %.2f)\n", wall, cpu,
              client_cpu, producer_cpu, cpu - client_cpu - producer_cpu);
  const bool ok = client.completed() == options.streams && static_cast<long long>(lat.size()) == expected;
  return ok ? 0 : 1;
}
