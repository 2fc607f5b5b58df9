// Fuzz target: the prefill worker's reading of a decode worker's
// KvDestination (PromptKvTransfer::Connect against its local group), over
// loopback transports. Input: a serialized tandem.v1.KvDestination. A
// memory_descriptor of exactly "@0" or "@1" is replaced by the descriptor
// of a real registered destination region (two heads per span, or one), so
// the fuzzer reaches everything past the transport's own checks.
// The local group: 2 source ranks of 1 KV head each (2 heads in the model),
// 2 layers, 8 blocks, 16 bytes per head and block.
// Asserts: no crash or exception; refusals are InvalidArgument,
// Unavailable or FailedPrecondition; an accepted destination has, for
// every rank, a layout that fits inside its registered region and every
// destination block inside that layout, so shipping the prompt's blocks
// (PutLayer for every layer and rank, then Flush) succeeds and no put
// lands outside the destination regions (loopback checks, ASan watches).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fuzz/fuzz_util.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "prefill_worker/prompt_kv_transfer.h"
#include "tandem/v1/worker.pb.h"

namespace {

constexpr int64_t kLayers = 2;
constexpr int64_t kBlocks = 8;
constexpr int64_t kHeadBytes = 16;

struct Setup {
  std::shared_ptr<tandem::LoopbackFabric> fabric = std::make_shared<tandem::LoopbackFabric>();
  std::vector<std::unique_ptr<tandem::LoopbackTransport>> transports;
  std::vector<std::vector<uint8_t>> memory;
  tandem::LocalKvGroup local;
  std::string dst_descriptor[2];  // "@0": two heads per span, "@1": one head
  uint64_t dst_length[2] = {0, 0};

  tandem::LoopbackTransport* Register(uint64_t bytes, std::string* descriptor, uint64_t* length) {
    transports.push_back(std::make_unique<tandem::LoopbackTransport>(fabric));
    memory.emplace_back(bytes, 0);
    auto d = transports.back()->RegisterMemory(memory.back().data(), memory.back().size());
    FUZZ_CHECK(d.ok(), d.status().ToString());
    if (descriptor != nullptr) *descriptor = d->Serialize();
    if (length != nullptr) *length = d->length;
    return transports.back().get();
  }
};

Setup& Get() {
  static Setup* s = [] {
    auto* s = new Setup;
    s->local.total_kv_heads = 2;
    for (int r = 0; r < 2; ++r) {
      tandem::LocalKvRank rank;
      rank.layout = {kLayers, kBlocks, 2 * kHeadBytes, 1};
      rank.transport = s->Register(rank.layout.total_bytes(), nullptr, nullptr);
      rank.heads = {r, 1};
      s->local.ranks.push_back(rank);
    }
    s->Register(kLayers * kBlocks * 4 * kHeadBytes, &s->dst_descriptor[0], &s->dst_length[0]);
    s->Register(kLayers * kBlocks * 2 * kHeadBytes, &s->dst_descriptor[1], &s->dst_length[1]);
    return s;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Setup& s = Get();
  tandem::v1::KvDestination dest;
  if (!dest.ParseFromArray(data, static_cast<int>(size))) return 0;
  for (tandem::v1::KvRankRegion& region : *dest.mutable_ranks()) {
    if (region.memory_descriptor() == "@0") region.set_memory_descriptor(s.dst_descriptor[0]);
    if (region.memory_descriptor() == "@1") region.set_memory_descriptor(s.dst_descriptor[1]);
  }
  absl::StatusOr<std::unique_ptr<tandem::PromptKvTransfer>> t = tandem::PromptKvTransfer::Connect(s.local, dest);
  if (!t.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(t.status()) || absl::IsUnavailable(t.status()) ||
                   absl::IsFailedPrecondition(t.status()), t.status().ToString());
    return 0;
  }
  const std::vector<tandem::BlockId>& dst = (*t)->dst_blocks();
  for (const tandem::v1::KvRankRegion& region : dest.ranks()) {
    const tandem::v1::KvLayout& l = region.layout();
    const uint64_t num_blocks = l.layer_bytes() / l.block_span_bytes();
    uint64_t total = 0;
    FUZZ_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(l.num_layers()), l.layer_bytes(), &total),
               "a rank's layout overflows 64 bits");
    for (int k = 0; k < 2; ++k) {
      if (region.memory_descriptor() == s.dst_descriptor[k]) FUZZ_CHECK(total <= s.dst_length[k], "layout past its region");
    }
    for (tandem::BlockId b : dst) {
      FUZZ_CHECK(b.value() >= 0 && static_cast<uint64_t>(b.value()) < num_blocks, "block outside the layout");
    }
  }
  if (dst.size() > static_cast<size_t>(kBlocks)) return 0;  // more blocks than a local prompt can have
  std::vector<tandem::BlockId> src;
  for (size_t i = 0; i < dst.size(); ++i) src.emplace_back(static_cast<int32_t>(i));
  for (int rank = 0; rank < 2; ++rank) {
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      const absl::Status st = (*t)->PutLayer(rank, layer, src);
      FUZZ_CHECK(st.ok(), "an accepted destination refused a put: " + st.ToString());
    }
  }
  const absl::Status flushed = (*t)->Flush(absl::Seconds(5));
  FUZZ_CHECK(flushed.ok(), flushed.ToString());
  return 0;
}
