// KvSender: ships a prefilled prompt's KV blocks into a decode worker's
// reserved blocks over the KV transport, off the engine loop thread.
//
// For each layer it posts the prompt's blocks from every local TP rank to
// the destination ranks that hold the same KV heads (PromptKvTransfer), then
// flushes; only an OK flush counts as delivered (docs/architecture.md: put, flush, then
// signal). Transfers run on a small
// pool of sender threads so the engine keeps stepping meanwhile; the source
// blocks stay held by the engine until the caller releases them.
// Thread-safety: Send() is thread-safe; callbacks run on a sender thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ids.h"
#include "prefill_worker/prompt_kv_transfer.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

struct SendResult {
  uint64_t bytes = 0;
  uint32_t num_blocks = 0;
};

class KvSender {
 public:
  using Done = std::function<void(absl::StatusOr<SendResult>)>;

  // `local` (its transports with the ranks' pools registered) must outlive
  // the sender.
  KvSender(const LocalKvGroup* local, std::chrono::milliseconds flush_timeout, int num_threads = 2);
  ~KvSender();  // finishes queued transfers first
  KvSender(const KvSender&) = delete;
  KvSender& operator=(const KvSender&) = delete;

  // Queues the transfer of `src` (local blocks of the prompt, in order) into
  // `dest`. Errors: InvalidArgument (layouts or block counts disagree,
  // malformed descriptor), Unavailable (peer unreachable or gone),
  // DeadlineExceeded (flush timed out).
  void Send(std::vector<BlockId> src, v1::KvDestination dest, Done done);
  // Flushes a transfer whose puts were already posted (layer by layer during
  // the forward pass) and reports its bytes.
  void Flush(std::unique_ptr<PromptKvTransfer> transfer, uint32_t num_blocks, Done done);

 private:
  struct Job {
    std::vector<BlockId> src;
    v1::KvDestination dest;
    Done done;
    std::unique_ptr<PromptKvTransfer> posted;  // set: only flush it
    uint32_t num_blocks = 0;
  };
  absl::StatusOr<SendResult> Transfer(const Job& job);
  void Run();

  const LocalKvGroup* const local_;
  const std::chrono::milliseconds flush_timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tandem
