#include "bench/load/load_runner.h"

#include <condition_variable>
#include <deque>
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
  if (!requests.empty() && requests.front().conversation >= 0) {
    return RunConversations(requests, point, arrival_seed, id_prefix);
  }
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

RunResult LoadRunner::RunConversations(const std::vector<BenchRequest>& requests, const LoadPoint& point,
                                       uint64_t arrival_seed, const std::string& id_prefix) {
  using Clock = RequestBackend::Clock;
  const int64_t n = static_cast<int64_t>(requests.size());
  auto same_conversation = [&requests](int64_t a, int64_t b) {
    return requests[a].conversation == requests[b].conversation;
  };
  std::vector<int64_t> first_turns;  // each conversation's first request
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || !same_conversation(i, i - 1)) first_turns.push_back(i);
  }
  const std::vector<double> offsets =
      ArrivalOffsets(point.arrivals, static_cast<int64_t>(first_turns.size()), arrival_seed);
  RunResult result;
  result.records.resize(requests.size());
  std::vector<BenchRequest> sent(requests.size());  // each request as sent (its whole prompt)

  std::counting_semaphore<> slots(point.max_concurrency > 0 ? point.max_concurrency : 0);
  std::mutex mu;
  std::condition_variable changed;
  std::deque<int64_t> ready;  // later turns whose prompt is built; guarded by mu
  int64_t remaining = n;      // guarded by mu

  const Clock::time_point epoch = Clock::now();
  size_t arrived = 0;  // conversations started (dispatcher thread only)
  // Bounded: every pass starts one request or waits for an arrival time or a
  // finished request; it ends once all n are recorded.
  while (true) {
    int64_t i = -1;
    {
      std::unique_lock<std::mutex> lock(mu);
      while (i < 0) {
        if (!ready.empty()) {
          i = ready.front();
          ready.pop_front();
        } else if (arrived < first_turns.size()) {
          const Clock::time_point due =
              epoch + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(offsets[arrived]));
          if (Clock::now() >= due) {
            i = first_turns[arrived++];
            sent[i] = requests[i];
          } else {
            changed.wait_until(lock, due);
          }
        } else if (remaining == 0) {
          break;
        } else {
          changed.wait(lock);
        }
      }
    }
    if (i < 0) break;
    if (point.max_concurrency > 0) slots.acquire();
    RequestRecord& record = result.records[i];
    record.requested_input_tokens = static_cast<int64_t>(sent[i].prompt_token_ids.size());
    record.requested_output_tokens = sent[i].output_len;
    auto done = [&, i] {
      if (point.max_concurrency > 0) slots.release();
      std::lock_guard<std::mutex> lock(mu);
      const int64_t next = i + 1;
      if (next < n && same_conversation(next, i)) {
        if (result.records[i].status.ok()) {
          // The conversation so far, then the next turn's message.
          BenchRequest& turn = sent[next];
          turn = requests[next];
          turn.prompt_token_ids = sent[i].prompt_token_ids;
          const std::vector<uint32_t>& output = result.records[i].output_token_ids;
          turn.prompt_token_ids.insert(turn.prompt_token_ids.end(), output.begin(), output.end());
          turn.prompt_token_ids.insert(turn.prompt_token_ids.end(), requests[next].prompt_token_ids.begin(),
                                       requests[next].prompt_token_ids.end());
          ready.push_back(next);
        } else {
          for (int64_t j = next; j < n && same_conversation(j, i); ++j) {
            result.records[j].status = absl::AbortedError(absl::StrCat(
                "not sent: turn ", requests[i].turn, " of its conversation failed"));
            result.records[j].requested_output_tokens = requests[j].output_len;
            --remaining;
          }
        }
      }
      --remaining;
      changed.notify_all();
    };
    backend_->Start(sent[i], absl::StrCat(id_prefix, i), epoch, &record, done);
  }
  for (const RequestRecord& r : result.records) result.duration_ns = std::max(result.duration_ns, r.trace.end_ns);
  return result;
}

}  // namespace tandem::bench
