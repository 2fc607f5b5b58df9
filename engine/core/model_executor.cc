#include "engine/core/model_executor.h"

#include <omp.h>

#include <algorithm>
#include <barrier>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/parallel/communicator.h"

namespace tandem {
namespace {

class SingleExecutor final : public ModelExecutor {
 public:
  explicit SingleExecutor(std::unique_ptr<LlamaModel> model) : model_(std::move(model)) {}
  const ModelConfig& config() const override { return model_->config(); }
  int tp_size() const override { return 1; }
  bool kv_cache_scales_from_checkpoint() const override { return model_->kv_cache_scales().from_checkpoint; }
  KvCacheShape KvShape(int, int64_t num_blocks, int64_t block_size, DType dtype) const override {
    return model_->MakeKvCacheShape(num_blocks, block_size, dtype);
  }
  void AllocateKvCaches(int64_t num_blocks, int64_t block_size, DType dtype) override {
    cache_ = std::make_unique<KvCache>(model_->MakeKvCacheShape(num_blocks, block_size, dtype));
  }
  KvCache& kv_cache(int) override { return *cache_; }
  absl::StatusOr<std::vector<float>> Forward(const ForwardBatch& batch, LayerKvListener* listener) override {
    return model_->Forward(batch, *cache_, listener);
  }

 private:
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<KvCache> cache_;
};

// Ranks as persistent threads. Forward() publishes the batch, every rank
// runs its shard (meeting in the communicator's collectives), and the
// caller takes rank 0's result.
class ThreadTpExecutor final : public ModelExecutor {
 public:
  ThreadTpExecutor(std::vector<std::unique_ptr<Communicator>> comms, std::vector<std::unique_ptr<LlamaModel>> models)
      : comms_(std::move(comms)), models_(std::move(models)), start_(Size() + 1), done_(Size() + 1),
        results_(Size()) {
    // Each rank's kernels get their share of the cores.
    const int threads_per_rank = std::max(1, omp_get_num_procs() / Size());
    for (int r = 1; r < Size(); ++r) {
      threads_.emplace_back([this, r, threads_per_rank] {
        omp_set_num_threads(threads_per_rank);
        RankLoop(r);
      });
    }
    threads_.emplace_back([this, threads_per_rank] {
      omp_set_num_threads(threads_per_rank);
      RankLoop(0);
    });
  }
  ~ThreadTpExecutor() override {
    stopping_ = true;
    start_.arrive_and_wait();
    for (std::thread& t : threads_) t.join();
  }

  const ModelConfig& config() const override { return models_[0]->config(); }
  int tp_size() const override { return Size(); }
  bool kv_cache_scales_from_checkpoint() const override { return models_[0]->kv_cache_scales().from_checkpoint; }
  KvCacheShape KvShape(int rank, int64_t num_blocks, int64_t block_size, DType dtype) const override {
    return models_[rank]->MakeKvCacheShape(num_blocks, block_size, dtype);
  }
  void AllocateKvCaches(int64_t num_blocks, int64_t block_size, DType dtype) override {
    caches_.clear();
    for (const auto& m : models_) caches_.push_back(std::make_unique<KvCache>(m->MakeKvCacheShape(num_blocks, block_size, dtype)));
  }
  KvCache& kv_cache(int rank) override { return *caches_[rank]; }

  absl::StatusOr<std::vector<float>> Forward(const ForwardBatch& batch, LayerKvListener* listener) override {
    batch_ = &batch;
    listener_ = listener;
    start_.arrive_and_wait();  // ranks run
    done_.arrive_and_wait();   // ranks finished
    for (int r = 0; r < Size(); ++r) {
      if (!results_[r].ok()) return results_[r].status();
    }
    return std::move(results_[0]);
  }

 private:
  int Size() const { return static_cast<int>(models_.size()); }

  void RankLoop(int rank) {
    while (true) {
      start_.arrive_and_wait();
      if (stopping_) return;
      results_[rank] = models_[rank]->Forward(*batch_, *caches_[rank], listener_);
      done_.arrive_and_wait();
    }
  }

  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<std::unique_ptr<LlamaModel>> models_;
  std::vector<std::unique_ptr<KvCache>> caches_;
  std::barrier<> start_, done_;
  std::vector<absl::StatusOr<std::vector<float>>> results_;
  const ForwardBatch* batch_ = nullptr;
  LayerKvListener* listener_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<ModelExecutor> MakeSingleExecutor(std::unique_ptr<LlamaModel> model) {
  return std::make_unique<SingleExecutor>(std::move(model));
}

absl::StatusOr<std::unique_ptr<ModelExecutor>> LoadExecutor(const std::filesystem::path& dir, int tp_size,
                                                            kernels::MatMulPrecision precision,
                                                            QuantizationConfig quantization) {
  if (tp_size < 1 || tp_size > 64) return absl::InvalidArgumentError(absl::StrCat("tp ", tp_size, ": must be in [1, 64]"));
  if (tp_size == 1) {
    ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir, {}, nullptr, precision, quantization));
    return MakeSingleExecutor(std::move(model));
  }
  std::vector<std::unique_ptr<Communicator>> comms = MakeCpuThreadCommunicators(tp_size);
  std::vector<std::unique_ptr<LlamaModel>> models;
  for (int r = 0; r < tp_size; ++r) {
    ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> m, LlamaModel::Load(dir, {r, tp_size}, comms[r].get(), precision, quantization));
    models.push_back(std::move(m));
  }
  return std::unique_ptr<ModelExecutor>(new ThreadTpExecutor(std::move(comms), std::move(models)));
}

}  // namespace tandem
