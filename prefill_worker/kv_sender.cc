#include "prefill_worker/kv_sender.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace tandem {

KvSender::KvSender(const LocalKvGroup* local, std::chrono::milliseconds flush_timeout, int num_threads)
    : local_(local), flush_timeout_(flush_timeout) {
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { Run(); });
}

KvSender::~KvSender() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void KvSender::Send(std::vector<BlockId> src, v1::KvDestination dest, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back({std::move(src), std::move(dest), std::move(done), nullptr, 0});
  }
  cv_.notify_one();
}

void KvSender::Flush(std::unique_ptr<PromptKvTransfer> transfer, uint32_t num_blocks, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back({{}, {}, std::move(done), std::move(transfer), num_blocks});
  }
  cv_.notify_one();
}

void KvSender::Run() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job.done(Transfer(job));
  }
}

absl::StatusOr<SendResult> KvSender::Transfer(const Job& job) {
  if (job.posted != nullptr) {
    RETURN_IF_ERROR(job.posted->Flush(absl::FromChrono(flush_timeout_)));
    return SendResult{job.posted->bytes_put(), job.num_blocks};
  }
  ASSIGN_OR_RETURN(std::unique_ptr<PromptKvTransfer> transfer, PromptKvTransfer::Connect(*local_, job.dest));
  // The destination holds the prompt's first blocks already (its prefix cache).
  const size_t skip = job.dest.num_cached_blocks();
  if (skip > job.src.size() || job.src.size() - skip != transfer->dst_blocks().size()) {
    return absl::InvalidArgumentError(absl::StrCat("destination holds ", skip, " and has ",
                                                   transfer->dst_blocks().size(), " blocks for a prompt of ",
                                                   job.src.size()));
  }
  const std::span<const BlockId> src = std::span(job.src).subspan(skip);
  for (int64_t layer = 0; layer < local_->ranks[0].layout.num_layers; ++layer) {
    for (size_t rank = 0; rank < local_->ranks.size(); ++rank) {
      RETURN_IF_ERROR(transfer->PutLayer(static_cast<int>(rank), layer, src));
    }
  }
  RETURN_IF_ERROR(transfer->Flush(absl::FromChrono(flush_timeout_)));
  return SendResult{transfer->bytes_put(), static_cast<uint32_t>(src.size())};
}

}  // namespace tandem
