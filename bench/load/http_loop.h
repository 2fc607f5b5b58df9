// HttpLoop: one thread that runs many libcurl transfers at once through the
// multi interface (curl_multi_poll + curl_multi_perform), so hundreds of
// concurrent HTTP streams need no thread each.
//
// A transfer is an HttpTransfer: it owns a configured CURL easy handle, and
// the loop calls its libcurl callbacks (set up by the transfer) and then its
// Finished() on the loop thread. After Finished() the loop deletes it.
//
// Bounds: every wait is at most kPollMs; Stop() (and the destructor) ends the
// loop: transfers still running are aborted, each Finished() with
// CURLE_ABORTED_BY_CALLBACK, before the thread is joined.
// Thread-safety: Submit and Stop may be called from any thread; everything
// else runs on the loop thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <curl/curl.h>

namespace tandem::bench {

class HttpTransfer {
 public:
  virtual ~HttpTransfer() = default;
  virtual CURL* easy() = 0;
  // `result` is libcurl's; `error` its message buffer (may be empty).
  virtual void Finished(CURLcode result, const std::string& error) = 0;
};

class HttpLoop {
 public:
  static constexpr int kPollMs = 100;

  HttpLoop();
  ~HttpLoop();
  HttpLoop(const HttpLoop&) = delete;
  HttpLoop& operator=(const HttpLoop&) = delete;

  // Takes ownership; the transfer starts on the loop thread. After Stop(), the
  // transfer is finished at once with CURLE_ABORTED_BY_CALLBACK.
  void Submit(std::unique_ptr<HttpTransfer> transfer);
  // Aborts what is running and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();

  CURLM* multi_ = nullptr;
  std::mutex mu_;
  std::vector<std::unique_ptr<HttpTransfer>> pending_;  // guarded by mu_
  bool stopping_ = false;                               // guarded by mu_
  std::thread thread_;
};

// curl_global_init, once per process (thread-safe).
void EnsureCurlGlobalInit();

}  // namespace tandem::bench
