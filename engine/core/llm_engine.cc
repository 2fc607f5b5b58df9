#include "engine/core/llm_engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/kv_cache_scales.h"

namespace tandem {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kAborted: return "abort";
    case FinishReason::kNone: return "";
  }
  return "";
}

absl::Status EngineConfig::Validate() const {
  RETURN_IF_ERROR(scheduler.Validate());
  if (block_size < 1) return absl::InvalidArgumentError(absl::StrCat("block_size = ", block_size, ": must be >= 1"));
  if (num_kv_blocks < 0) return absl::InvalidArgumentError("num_kv_blocks: must be >= 0");
  if (num_kv_blocks == 0 && kv_cache_memory_bytes <= 0) {
    return absl::InvalidArgumentError("kv_cache_memory_bytes: must be > 0 when num_kv_blocks is 0");
  }
  if (kv_dtype == DType::kU8 || kv_dtype == DType::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_dtype ", std::string(DTypeName(kv_dtype)), ": not a KV-cache dtype"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LlmEngine>> LlmEngine::Create(std::unique_ptr<LlamaModel> model,
                                                             const EngineConfig& config) {
  return Create(MakeSingleExecutor(std::move(model)), config);
}

absl::StatusOr<std::unique_ptr<LlmEngine>> LlmEngine::Create(std::unique_ptr<ModelExecutor> model,
                                                             const EngineConfig& config) {
  RETURN_IF_ERROR(config.Validate());
  int64_t num_blocks = config.num_kv_blocks;
  if (num_blocks == 0) {
    // The budget covers every rank's share of a block.
    int64_t bytes_per_block = 0;
    for (int r = 0; r < model->tp_size(); ++r) {
      bytes_per_block += model->KvShape(r, 1, config.block_size, config.kv_dtype).bytes_per_block();
    }
    num_blocks = config.kv_cache_memory_bytes / bytes_per_block;
    if (num_blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat("kv_cache_memory_bytes = ", config.kv_cache_memory_bytes,
                                                     " holds no block (one block needs ", bytes_per_block,
                                                     " bytes)"));
    }
  }
  if (num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("KV pool larger than 2^31 blocks");
  }
  return std::unique_ptr<LlmEngine>(new LlmEngine(std::move(model), config, num_blocks));
}

absl::Status LlmEngine::WarmUp() {
  if (!seqs_.empty()) return absl::FailedPreconditionError("WarmUp: the engine already holds requests");
  const int64_t block_size = config_.block_size;
  const int64_t tokens = std::min<int64_t>({config_.scheduler.max_num_batched_tokens,
                                            model_->config().max_position_embeddings,
                                            model_->kv_cache(0).shape().num_blocks * block_size});
  if (tokens < 1) return absl::OkStatus();
  ForwardBatch batch;
  SequenceSlice seq;
  seq.num_query_tokens = static_cast<int32_t>(tokens);
  seq.context_len = static_cast<int32_t>(tokens);
  for (int64_t b = 0; b * block_size < tokens; ++b) seq.block_table.push_back(static_cast<int32_t>(b));
  for (int64_t t = 0; t < tokens; ++t) {
    batch.token_ids.push_back(0);
    batch.positions.push_back(static_cast<int32_t>(t));
    batch.slot_mapping.push_back(t);  // block t / block_size, offset t % block_size
  }
  batch.seqs.push_back(std::move(seq));
  batch.logit_indices.push_back(static_cast<int32_t>(tokens - 1));
  return model_->Forward(batch, nullptr).status();
}

LlmEngine::LlmEngine(std::unique_ptr<ModelExecutor> model, const EngineConfig& config, int64_t num_blocks)
    : config_(config), model_(std::move(model)) {
  model_->AllocateKvCaches(num_blocks, config.block_size, config.kv_dtype);
  if (config.kv_dtype == DType::kF8E4M3) {
    std::fprintf(stderr, "%s\n", KvCacheScalesNote(model_->kv_cache_scales_from_checkpoint()).c_str());
  }
  KvCacheManagerOptions kv_options;
  kv_options.num_blocks = static_cast<int32_t>(num_blocks);
  kv_options.block_size = config.block_size;
  kv_options.enable_prefix_caching = config.enable_prefix_caching;
  kv_options.event_log = config.kv_event_log.get();  // config_ holds it as long as the engine lives
  kv_ = std::make_unique<KvCacheManager>(kv_options);
  scheduler_ = std::make_unique<Scheduler>(config.scheduler, kv_.get(), [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  });
  runner_ = std::make_unique<ModelRunner>(model_.get(), kv_.get());
}

absl::Status LlmEngine::ValidateRequest(const EngineRequest& r) const {
  const ModelConfig& mc = model_->config();
  if (r.request_id.empty()) return absl::InvalidArgumentError("request_id: empty");
  if (seqs_.contains(r.request_id)) {
    return absl::AlreadyExistsError(absl::StrCat("request_id '", r.request_id, "' is already in use"));
  }
  if (r.prompt_token_ids.empty()) return absl::InvalidArgumentError("prompt: empty");
  for (int32_t id : r.prompt_token_ids) {
    if (id < 0 || id >= mc.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_token_ids: ", id, " is outside the vocabulary of ", mc.vocab_size));
    }
  }
  RETURN_IF_ERROR(r.sampling.Validate());
  const int64_t total = static_cast<int64_t>(r.prompt_token_ids.size()) + r.sampling.max_tokens;
  if (total > mc.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", r.prompt_token_ids.size(), " tokens) + max_tokens (",
                                                   r.sampling.max_tokens, ") exceeds the model's context of ",
                                                   mc.max_position_embeddings));
  }
  if (!scheduler_->FitsPool(total)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt + max_tokens (", total,
                                                   " tokens) needs more KV blocks than the pool's ",
                                                   kv_->pool().num_blocks()));
  }
  if (!config_.scheduler.enable_chunked_prefill &&
      static_cast<int64_t>(r.prompt_token_ids.size()) > config_.scheduler.max_num_batched_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", r.prompt_token_ids.size(),
                                                   " tokens) exceeds max_num_batched_tokens (",
                                                   config_.scheduler.max_num_batched_tokens,
                                                   ") and chunked prefill is off"));
  }
  return absl::OkStatus();
}

absl::Status LlmEngine::AddRequest(EngineRequest r) {
  RETURN_IF_ERROR(ValidateRequest(r));
  const uint64_t arrival = next_arrival_++;
  auto seq = std::make_unique<Sequence>(SeqId(next_seq_id_++), r.request_id, std::move(r.prompt_token_ids),
                                        r.sampling, r.priority, arrival, config_.seed + arrival);
  seq->prefill_only = r.prefill_only;
  scheduler_->AddWaiting(seq.get());
  seqs_.emplace(r.request_id, std::move(seq));
  return absl::OkStatus();
}

Sequence* LlmEngine::Find(const std::string& request_id) const {
  auto it = seqs_.find(request_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

bool LlmEngine::AppendToken(Sequence& seq, const SampledToken& token, RequestOutput& out) {
  seq.tokens.push_back(token.token_id);
  seq.samples.push_back(token);
  out.new_token_ids.push_back(token.token_id);
  out.new_samples.push_back(token);
  const SamplingParams& p = seq.params;
  const std::vector<int32_t>& eos = model_->config().eos_token_ids;
  if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token.token_id) != p.stop_token_ids.end() ||
      (!p.ignore_eos && std::find(eos.begin(), eos.end(), token.token_id) != eos.end())) {
    out.finish_reason = FinishReason::kStop;
  } else if (seq.num_output_tokens() >= static_cast<int32_t>(p.max_tokens)) {
    out.finish_reason = FinishReason::kLength;
  }
  out.finished = out.finish_reason != FinishReason::kNone;
  return out.finished;
}

void LlmEngine::Release(Sequence& seq, FinishReason reason) {
  scheduler_->Remove(&seq);
  (void)kv_->Free(seq.id);  // NotFound for a sequence never admitted: nothing to free
  seq.status = SequenceStatus::kFinished;
  seq.finish_reason = reason;
  seqs_.erase(seq.request_id);  // destroys seq
}

absl::StatusOr<std::vector<RequestOutput>> LlmEngine::Step() {
  const SchedulerOutput plan = scheduler_->Schedule();
  last_step_queue_seconds_.clear();
  const auto now = std::chrono::steady_clock::now();
  for (const ScheduledSequence& s : plan.scheduled) {
    if (s.seq->ever_scheduled) continue;
    s.seq->ever_scheduled = true;
    last_step_queue_seconds_.push_back(std::chrono::duration<double>(now - s.seq->runnable_since).count());
  }
  if (observer_ != nullptr) observer_->OnStepPlanned(plan, *kv_);
  ASSIGN_OR_RETURN(std::vector<StepSample> samples, runner_->Run(plan, observer_));
  for (const ScheduledSequence& s : plan.scheduled) {
    s.seq->num_computed_tokens += s.num_new_tokens;
    const absl::Status st = kv_->CommitComputed(s.seq->id, s.seq->tokens, s.seq->num_computed_tokens);
    if (!st.ok()) return absl::InternalError(absl::StrCat("commit of ", s.seq->request_id, ": ", st.message()));
  }
  ++num_steps_;
  last_step_num_tokens_ = plan.num_batched_tokens;
  last_step_num_seqs_ = static_cast<int32_t>(plan.scheduled.size());

  std::vector<RequestOutput> outputs;
  for (const StepSample& sample : samples) {
    Sequence& seq = *sample.seq;
    RequestOutput out;
    out.request_id = seq.request_id;
    const bool finished = AppendToken(seq, sample.token, out);
    if (seq.prefill_only) {
      // The first token is the prefill's product; the blocks stay for the transfer.
      scheduler_->Remove(&seq);
      seq.status = SequenceStatus::kPrefilled;
      out.finished = true;
    } else if (finished) {
      outputs.push_back(out);
      Release(seq, out.finish_reason);
      continue;
    }
    outputs.push_back(std::move(out));
  }
  return outputs;
}

bool LlmEngine::Abort(const std::string& request_id) {
  Sequence* seq = Find(request_id);
  if (seq == nullptr) return false;
  Release(*seq, FinishReason::kAborted);
  return true;
}

bool LlmEngine::Finish(const std::string& request_id, FinishReason reason) {
  Sequence* seq = Find(request_id);
  if (seq == nullptr) return false;
  Release(*seq, reason);
  return true;
}

bool LlmEngine::HasUnfinishedRequests() const {
  return scheduler_->num_running() + scheduler_->num_waiting() > 0;
}

EngineStats LlmEngine::Stats() const {
  EngineStats s;
  s.num_running = scheduler_->num_running();
  s.num_waiting = scheduler_->num_waiting();
  for (const auto& [id, seq] : seqs_) {
    if (seq->status == SequenceStatus::kAwaitingKv) ++s.num_awaiting_kv;
    if (seq->status == SequenceStatus::kPrefilled) ++s.num_prefilled;
  }
  s.kv = kv_->Stats();
  s.num_preemptions = scheduler_->num_preemptions();
  s.num_steps = num_steps_;
  s.last_step_num_tokens = last_step_num_tokens_;
  s.last_step_num_seqs = last_step_num_seqs_;
  return s;
}

absl::StatusOr<std::vector<BlockId>> LlmEngine::PrefilledBlocks(const std::string& request_id) const {
  Sequence* seq = Find(request_id);
  if (seq == nullptr || seq->status != SequenceStatus::kPrefilled) {
    return absl::NotFoundError(absl::StrCat("no prefilled request '", request_id, "'"));
  }
  const std::span<const BlockId> table = kv_->BlockTable(seq->id);
  return std::vector<BlockId>(table.begin(), table.end());
}

absl::Status LlmEngine::ReleasePrefilled(const std::string& request_id) {
  Sequence* seq = Find(request_id);
  if (seq == nullptr || seq->status != SequenceStatus::kPrefilled) {
    return absl::NotFoundError(absl::StrCat("no prefilled request '", request_id, "'"));
  }
  Release(*seq, FinishReason::kNone);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BlockId>> LlmEngine::ReserveExternal(EngineRequest r) {
  RETURN_IF_ERROR(ValidateRequest(r));
  if (static_cast<int64_t>(r.replayed_token_ids.size()) >= r.sampling.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("replayed_token_ids: ", r.replayed_token_ids.size(),
                                                   " tokens leave nothing to generate (max_tokens ",
                                                   r.sampling.max_tokens, ")"));
  }
  for (int32_t id : r.replayed_token_ids) {
    if (id < 0 || id >= model_->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("replayed_token_ids: ", id, " is outside the vocabulary"));
    }
  }
  const uint64_t arrival = next_arrival_++;
  auto seq = std::make_unique<Sequence>(SeqId(next_seq_id_++), r.request_id, std::move(r.prompt_token_ids),
                                        r.sampling, r.priority, arrival, config_.seed + arrival);
  // A migrated request: its earlier output, as if generated here. Observe
  // advances the random stream exactly as sampling them did, so what is
  // drawn next is what the failed worker would have drawn.
  for (size_t i = 0; i + 1 < r.replayed_token_ids.size(); ++i) {
    seq->tokens.push_back(r.replayed_token_ids[i]);
    seq->sampler.Observe(r.replayed_token_ids[i]);
  }
  // Blocks promised to running sequences (reserving policies) are not free.
  if (!scheduler_->PromiseFullContext(seq.get())) {
    return absl::ResourceExhaustedError(absl::StrCat("no room for the whole context of ", seq->num_tokens(),
                                                     " prompt tokens + ", seq->params.max_tokens, " to generate"));
  }
  // The cached prefix's blocks are shared (read only); the KV from outside
  // goes only into the blocks after them.
  const CachedPrefix prefix = r.reuse_cached_prefix ? kv_->FindCachedPrefix(seq->tokens) : CachedPrefix{};
  const absl::Status st =
      kv_->Allocate(seq->id, seq->tokens, seq->num_tokens() - prefix.num_cached_tokens, prefix);
  if (!st.ok()) {
    scheduler_->Remove(seq.get());  // drops the promise
    return absl::ResourceExhaustedError(absl::StrCat("no room for ", seq->num_tokens(),
                                                     " prompt tokens of KV: ", st.message()));
  }
  seq->status = SequenceStatus::kAwaitingKv;
  const std::span<const BlockId> table = kv_->BlockTable(seq->id);
  std::vector<BlockId> blocks(table.begin() + static_cast<std::ptrdiff_t>(prefix.blocks.size()), table.end());
  seqs_.emplace(seq->request_id, std::move(seq));
  return blocks;
}

absl::Status LlmEngine::ActivateExternal(const std::string& request_id, int32_t first_token,
                                        RequestOutput* first_output) {
  Sequence* seq = Find(request_id);
  if (seq == nullptr || seq->status != SequenceStatus::kAwaitingKv) {
    return absl::NotFoundError(absl::StrCat("no reservation for request '", request_id, "'"));
  }
  if (first_token < 0 || first_token >= model_->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("first token ", first_token, " outside the vocabulary"));
  }
  seq->num_computed_tokens = seq->num_tokens();  // the prompt (and any replayed output) came from outside
  RETURN_IF_ERROR(kv_->CommitComputed(seq->id, seq->tokens, seq->num_computed_tokens));
  seq->sampler.Observe(first_token);
  RequestOutput out;
  out.request_id = request_id;
  const bool finished = AppendToken(*seq, SampledToken{first_token, 0.0f, {}}, out);
  if (first_output != nullptr) *first_output = out;
  if (finished) {
    Release(*seq, out.finish_reason);
    return absl::OkStatus();
  }
  // Its queue time counts from now: waiting for the KV is the transfer's time, not the queue's.
  seq->runnable_since = std::chrono::steady_clock::now();
  scheduler_->AddRunning(seq);
  return absl::OkStatus();
}

}  // namespace tandem
