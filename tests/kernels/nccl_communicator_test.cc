// NCCL communicator on real devices: one rank per GPU (at most 2), each in
// its own thread, checked against values computed on the host. Skips cleanly
// where no CUDA device answers.
#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include "engine/parallel/nccl_communicator.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

int Devices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

TEST(NcclCommunicatorTest, CollectivesMatchHostArithmetic) {
  const int devices = Devices();
  if (devices == 0) GTEST_SKIP() << "no CUDA device";
  const int size = std::min(devices, 2);
  auto id = MakeNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  constexpr int64_t kN = 1000;
  std::vector<std::vector<float>> reduced(size), gathered(size), broadcast(size);
  std::vector<std::thread> ranks;
  for (int r = 0; r < size; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = MakeNcclCommunicator(*id, r, size, r);
      ASSERT_TRUE(comm.ok()) << comm.status();
      std::vector<float> host(kN);
      for (int64_t i = 0; i < kN; ++i) host[i] = static_cast<float>((r + 1) * i);
      float *d = nullptr, *g = nullptr;
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), kN * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&g), kN * size * sizeof(float)), cudaSuccess);
      cudaMemcpy(d, host.data(), kN * sizeof(float), cudaMemcpyHostToDevice);
      (*comm)->AllGather(d, kN, g);
      gathered[r].resize(kN * size);
      cudaMemcpy(gathered[r].data(), g, kN * size * sizeof(float), cudaMemcpyDeviceToHost);
      (*comm)->AllReduceSum(d, kN);
      reduced[r].resize(kN);
      cudaMemcpy(reduced[r].data(), d, kN * sizeof(float), cudaMemcpyDeviceToHost);
      cudaMemcpy(d, host.data(), kN * sizeof(float), cudaMemcpyHostToDevice);
      (*comm)->Broadcast(d, kN, 0);
      broadcast[r].resize(kN);
      cudaMemcpy(broadcast[r].data(), d, kN * sizeof(float), cudaMemcpyDeviceToHost);
      (*comm)->Barrier();
      cudaFree(d);
      cudaFree(g);
    });
  }
  for (std::thread& t : ranks) t.join();
  const float sum_of_factors = static_cast<float>(size * (size + 1) / 2);
  for (int r = 0; r < size; ++r) {
    for (int64_t i = 0; i < kN; ++i) {
      ASSERT_EQ(reduced[r][i], sum_of_factors * i) << "rank " << r << " i " << i;
      ASSERT_EQ(broadcast[r][i], static_cast<float>(i)) << "rank " << r;
      for (int src = 0; src < size; ++src) ASSERT_EQ(gathered[r][src * kN + i], static_cast<float>((src + 1) * i));
    }
  }
}

TEST(NcclCommunicatorTest, RejectsBadArguments) {
  EXPECT_EQ(MakeNcclCommunicator("short", 0, 1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  if (Devices() == 0) {
    EXPECT_EQ(MakeNcclUniqueId().status().code(), absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace tandem
