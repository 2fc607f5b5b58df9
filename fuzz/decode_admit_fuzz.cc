// Fuzz target: the decode worker's reading of Admit and Decode requests
// (decode_worker/admit_request.h: AdmitRequest -> EngineRequest, then
// LlmEngine::ReserveExternal's validation and reservation; DecodeRequest's
// first token -> ActivateExternal), on the bundled model with a 64-block
// pool. Input: a 2-byte length n, n bytes of serialized
// tandem.v1.AdmitRequest, then a serialized tandem.v1.DecodeRequest (an
// empty request_id there means the admitted one).
// Asserts: no crash or exception; refusals are InvalidArgument,
// AlreadyExists, ResourceExhausted or NotFound; an accepted reservation
// holds exactly ceil(tokens / block_size) distinct blocks inside the pool;
// activation accepts only a first token inside the vocabulary; after the
// request is aborted every block is free again and nothing is left in the
// engine (docs/architecture.md invariant 3).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "decode_worker/admit_request.h"
#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "fuzz/fuzz_util.h"
#include "tandem/v1/worker.pb.h"

namespace {

constexpr int64_t kNumBlocks = 64;

tandem::LlmEngine& Engine() {
  static tandem::LlmEngine* engine = [] {
    auto executor = tandem::LoadExecutor(tandem::fuzz::BundledModelDir(), 1);
    FUZZ_CHECK(executor.ok(), executor.status().ToString());
    tandem::EngineConfig config;
    config.num_kv_blocks = kNumBlocks;
    auto e = tandem::LlmEngine::Create(*std::move(executor), config);
    FUZZ_CHECK(e.ok(), e.status().ToString());
    return e->release();
  }();
  return *engine;
}

bool Idle(const tandem::EngineStats& s) {
  return s.num_running == 0 && s.num_waiting == 0 && s.num_awaiting_kv == 0 && s.num_prefilled == 0 &&
         s.kv.num_used_blocks == 0 && s.kv.num_free_blocks == s.kv.num_blocks;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::LlmEngine& engine = Engine();
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const std::string_view admit_bytes = in.Bytes(in.U16());
  const std::string_view decode_bytes = in.Rest();
  tandem::v1::AdmitRequest admit;
  if (!admit.ParseFromArray(admit_bytes.data(), static_cast<int>(admit_bytes.size()))) return 0;
  const tandem::EngineRequest request = tandem::EngineRequestFromAdmit(admit);
  const int64_t vocab = engine.model_config().vocab_size;

  const int64_t hits_before = engine.Stats().kv.prefix_hits_tokens;
  absl::StatusOr<std::vector<tandem::BlockId>> blocks = engine.ReserveExternal(request);
  if (!blocks.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(blocks.status()) || absl::IsAlreadyExists(blocks.status()) ||
                   absl::IsResourceExhausted(blocks.status()), blocks.status().ToString());
    FUZZ_CHECK(Idle(engine.Stats()), "a refused reservation left state behind");
    return 0;
  }
  for (int32_t id : request.prompt_token_ids) FUZZ_CHECK(id >= 0 && id < vocab, "prompt id outside the vocabulary");
  const size_t replayed = request.replayed_token_ids.empty() ? 0 : request.replayed_token_ids.size() - 1;
  const size_t tokens = request.prompt_token_ids.size() + replayed;
  const size_t block_size = static_cast<size_t>(engine.config().block_size);
  // Earlier inputs' activated requests leave cached blocks: a context
  // starting like one of them reuses its leading blocks (never its last
  // token's block) and gets blocks only for the rest.
  const int64_t hit_tokens = engine.Stats().kv.prefix_hits_tokens - hits_before;
  FUZZ_CHECK(hit_tokens >= 0 && hit_tokens % static_cast<int64_t>(block_size) == 0, "prefix hit of part of a block");
  const size_t cached = static_cast<size_t>(hit_tokens) / block_size;
  FUZZ_CHECK(tokens == 0 || cached <= (tokens - 1) / block_size, "the whole context reused");
  FUZZ_CHECK(cached + blocks->size() == (tokens + block_size - 1) / block_size, "wrong number of blocks reserved");
  std::set<int32_t> distinct;
  for (tandem::BlockId b : *blocks) {
    FUZZ_CHECK(b.value() >= 0 && b.value() < kNumBlocks, "block outside the pool");
    distinct.insert(b.value());
  }
  FUZZ_CHECK(distinct.size() == blocks->size(), "a block reserved twice");

  tandem::v1::DecodeRequest decode;
  if (decode.ParseFromArray(decode_bytes.data(), static_cast<int>(decode_bytes.size()))) {
    const std::string id = decode.request_id().empty() ? request.request_id : decode.request_id();
    const int32_t first = tandem::FirstTokenOf(decode);
    tandem::RequestOutput out;
    const absl::Status st = engine.ActivateExternal(id, first, &out);
    if (st.ok()) {
      FUZZ_CHECK(id == request.request_id, "activated an unknown request");
      FUZZ_CHECK(first >= 0 && first < vocab, "activated with a first token outside the vocabulary");
      FUZZ_CHECK(out.new_token_ids.size() == 1 && out.new_token_ids[0] == first, "first output");
    } else {
      FUZZ_CHECK(absl::IsInvalidArgument(st) || absl::IsNotFound(st), st.ToString());
    }
  }
  engine.Abort(request.request_id);
  FUZZ_CHECK(Idle(engine.Stats()), "blocks or sequences left after the request ended");
  return 0;
}
