// Ranks as threads: each collective publishes every rank's pointer, meets at
// a barrier, reads what it needs in rank order, and meets again so no rank
// reuses its buffer while another still reads it.
#include <barrier>
#include <cstring>

#include "engine/parallel/communicator.h"

namespace tandem {
namespace {

struct SharedGroup {
  explicit SharedGroup(int size) : size(size), in(size), out(size), sync(size) {}
  const int size;
  std::vector<const float*> in;  // each rank's input for the current collective
  std::vector<float*> out;       // each rank's output
  std::barrier<> sync;
};

class CpuThreadCommunicator final : public Communicator {
 public:
  CpuThreadCommunicator(std::shared_ptr<SharedGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  void AllReduceSum(float* data, int64_t n) override {
    SharedGroup& g = *group_;
    if (g.size == 1) return;
    scratch_.assign(data, data + n);  // others read our copy while we overwrite data
    g.in[rank_] = scratch_.data();
    g.sync.arrive_and_wait();
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < g.size; ++r) sum += g.in[r][i];  // fixed order: deterministic
      data[i] = sum;
    }
    g.sync.arrive_and_wait();
  }

  void AllGather(const float* in, int64_t n, float* out) override {
    SharedGroup& g = *group_;
    g.in[rank_] = in;
    g.sync.arrive_and_wait();
    for (int r = 0; r < g.size; ++r) std::memcpy(out + r * n, g.in[r], n * sizeof(float));
    g.sync.arrive_and_wait();
  }

  void Broadcast(float* data, int64_t n, int root) override {
    SharedGroup& g = *group_;
    if (g.size == 1) return;
    g.in[rank_] = data;
    g.sync.arrive_and_wait();
    if (rank_ != root) std::memcpy(data, g.in[root], n * sizeof(float));
    g.sync.arrive_and_wait();
  }

  void Barrier() override { group_->sync.arrive_and_wait(); }

 private:
  std::shared_ptr<SharedGroup> group_;
  const int rank_;
  std::vector<float> scratch_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> MakeCpuThreadCommunicators(int size) {
  auto group = std::make_shared<SharedGroup>(size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<CpuThreadCommunicator>(group, r));
  return out;
}

}  // namespace tandem
