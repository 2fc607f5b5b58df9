#include "bench/load/http_loop.h"

#include <cstdlib>
#include <unordered_map>

namespace tandem::bench {

void EnsureCurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    std::atexit(curl_global_cleanup);
  });
}

HttpLoop::HttpLoop() {
  EnsureCurlGlobalInit();
  multi_ = curl_multi_init();
  thread_ = std::thread([this] { Run(); });
}

HttpLoop::~HttpLoop() {
  Stop();
  curl_multi_cleanup(multi_);
}

void HttpLoop::Submit(std::unique_ptr<HttpTransfer> transfer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      pending_.push_back(std::move(transfer));
      transfer = nullptr;
    }
  }
  if (transfer != nullptr) {
    transfer->Finished(CURLE_ABORTED_BY_CALLBACK, "the HTTP client has stopped");
    return;
  }
  curl_multi_wakeup(multi_);
}

void HttpLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_);
  if (thread_.joinable()) thread_.join();
}

void HttpLoop::Run() {
  std::unordered_map<CURL*, std::unique_ptr<HttpTransfer>> active;
  auto finish = [&](CURL* easy, CURLcode result) {
    auto it = active.find(easy);
    if (it == active.end()) return;
    std::unique_ptr<HttpTransfer> t = std::move(it->second);
    active.erase(it);
    curl_multi_remove_handle(multi_, easy);
    t->Finished(result, result == CURLE_OK ? "" : curl_easy_strerror(result));
  };
  while (true) {
    std::vector<std::unique_ptr<HttpTransfer>> fresh;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mu_);
      fresh.swap(pending_);
      stopping = stopping_;
    }
    for (auto& t : fresh) {
      CURL* easy = t->easy();
      if (stopping) {
        t->Finished(CURLE_ABORTED_BY_CALLBACK, "the HTTP client has stopped");
        continue;
      }
      if (CURLMcode rc = curl_multi_add_handle(multi_, easy); rc != CURLM_OK) {
        t->Finished(CURLE_FAILED_INIT, curl_multi_strerror(rc));
        continue;
      }
      active.emplace(easy, std::move(t));
    }
    if (stopping) {
      while (!active.empty()) finish(active.begin()->first, CURLE_ABORTED_BY_CALLBACK);
      return;
    }
    int running = 0;
    curl_multi_perform(multi_, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg == CURLMSG_DONE) finish(msg->easy_handle, msg->data.result);
    }
    curl_multi_poll(multi_, nullptr, 0, kPollMs, nullptr);
  }
}

}  // namespace tandem::bench
