#include "bench/load/load_runner.h"

#include <condition_variable>
#include <mutex>
#include <semaphore>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/load/arrivals.h"

namespace tandem::bench {

LoadRunner::LoadRunner(std::unique_ptr<RequestBackend> backend) : backend_(std::move(backend)) {}

LoadRunner::~LoadRunner() = default;

RunResult LoadRunner::Run(const std::vector<BenchRequest>& requests, const LoadPoint& point,
                          uint64_t arrival_seed, const std::string& id_prefix) {
  using Clock = RequestBackend::Clock;
  const int64_t n = static_cast<int64_t>(requests.size());
  const std::vector<double> offsets = ArrivalOffsets(point.arrivals, n, arrival_seed);
  RunResult result;
  result.records.resize(requests.size());

  // Free slots when capped; unused otherwise.
  std::counting_semaphore<> slots(point.max_concurrency > 0 ? point.max_concurrency : 0);
  std::mutex mu;
  std::condition_variable all_done;
  int64_t remaining = n;  // guarded by mu

  const Clock::time_point epoch = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(epoch + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(offsets[i])));
    if (point.max_concurrency > 0) slots.acquire();
    RequestRecord& record = result.records[i];
    record.requested_input_tokens = static_cast<int64_t>(requests[i].prompt_token_ids.size());
    record.requested_output_tokens = requests[i].output_len;
    auto done = [&] {
      if (point.max_concurrency > 0) slots.release();
      std::lock_guard<std::mutex> lock(mu);
      if (--remaining == 0) all_done.notify_all();
    };
    backend_->Start(requests[i], absl::StrCat(id_prefix, i), epoch, &record, done);
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    all_done.wait(lock, [&] { return remaining == 0; });
  }
  for (const RequestRecord& r : result.records) result.duration_ns = std::max(result.duration_ns, r.trace.end_ns);
  return result;
}

}  // namespace tandem::bench
