#include "worker/engine_flags.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/auto_dtype.h"

namespace tandem::cli {

absl::StatusOr<DType> ParseKvCacheDtype(const std::string& name) {
  if (name == "fp32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "fp16") return DType::kF16;
  if (name == "int8") return DType::kI8;      // per-token, per-head scales in the blocks
  if (name == "fp8") return DType::kF8E4M3;   // static per-layer, per-head scales
  return absl::InvalidArgumentError(
      absl::StrCat("--kv-cache-dtype '", name, "': must be auto, fp32, bf16, fp16, int8 or fp8"));
}

std::string KvCacheDtypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "fp16";
    case DType::kI8:
      return "int8";
    case DType::kF8E4M3:
      return "fp8";
    default:
      return "fp32";
  }
}

std::vector<std::pair<std::string, std::string>> EngineArithmeticLabels(const EngineConfig& config) {
  const char* quantization = "none";
  switch (config.quantization.scheme) {
    case Quantization::kInt8:
      quantization = "int8";
      break;
    case Quantization::kFp8:
      quantization = "fp8";
      break;
    case Quantization::kInt4:
      quantization = "int4";
      break;
    case Quantization::kNone:
      break;
  }
  return {{"dtype", MatMulPrecisionName(config.precision)},
          {"kv_cache_dtype", KvCacheDtypeName(config.kv_dtype)},
          {"cpu_isa", std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa()))},
          {"quantization", quantization}};
}

std::string DescribeEngineArithmetic(const EngineConfig& config) {
  std::string s;
  for (const auto& [key, value] : EngineArithmeticLabels(config)) {
    absl::StrAppend(&s, s.empty() ? "" : ", ", key, " ", value);
  }
  return s;
}

absl::StatusOr<kernels::MatMulPrecision> ParseMatMulDtype(const std::string& name) {
  if (name == "float32" || name == "float") return kernels::MatMulPrecision::kF32;
  if (name == "bfloat16") return kernels::MatMulPrecision::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("--dtype '", name, "': must be auto, float32 or bfloat16"));
}

absl::StatusOr<Quantization> ParseQuantization(const std::string& name) {
  if (name == "none") return Quantization::kNone;
  if (name == "int8") return Quantization::kInt8;
  if (name == "fp8") return Quantization::kFp8;
  if (name == "int4") return Quantization::kInt4;
  return absl::InvalidArgumentError(absl::StrCat("--quantization '", name, "': must be none, int8, fp8 or int4"));
}

void EngineFlags::Register(FlagSet& f) {
  f.AddInt("max-num-batched-tokens", &max_num_batched_tokens,
           "token budget of one step (default 256; 2048 with --no-chunked-prefill)");
  f.AddInt("max-num-seqs", &max_num_seqs, "most sequences running at once (default 64)");
  f.AddInt("block-size", &block_size, "tokens per KV block (default 16)");
  f.AddInt("num-kv-blocks", &num_kv_blocks, "KV pool size in blocks (overrides --kv-cache-memory)");
  f.AddInt("kv-cache-memory", &kv_cache_memory_mib, "KV pool budget in MiB (default 1024)");
  f.AddString("kv-cache-dtype", &kv_cache_dtype,
              "auto | fp32 | bf16 | fp16 | int8 | fp8 (default auto: the checkpoint's dtype when BF16 or F16, "
              "else fp32); int8: symmetric, a scale per token and KV head; "
              "fp8: E4M3 with the checkpoint's k_scale/v_scale per layer and KV head, else 1.0");
  f.AddString("dtype", &dtype,
              "auto | float32 | bfloat16: matmul arithmetic; bfloat16 rounds activations to BF16 and runs "
              "BF16 dot products (AMX tiles or AVX512_BF16) where the CPU has them (default auto: bfloat16 "
              "for a BF16 checkpoint on such a CPU, else float32)");
  f.AddString("quantization", &quantization,
              "none | int8 | fp8 | int4: quantize at load; int8 = W8A8 (per-row int8 weights, per-token int8 "
              "activations, int32 sums); fp8 = W8A16 (per-row-scaled FP8 E4M3 weights, fp32 activations); "
              "int4 = W4A16 (group-wise int4 weights, round to nearest, fp32 activations); all for the "
              "attention and MLP projections; embeddings, norms and the LM head stay in "
              "the file's dtype (default none)");
  f.AddBool("no-prefix-caching", &no_prefix_caching, "turn automatic prefix caching off");
  f.AddBool("no-chunked-prefill", &no_chunked_prefill, "prefill each prompt in one step");
  f.AddString("batching", &batching, "none | static | dynamic | continuous | paged (default paged)");
  f.AddString("scheduling-policy", &scheduling_policy, "fcfs | priority (default fcfs)");
  f.AddInt("batch-size", &batch_size, "static/dynamic batch size (default 8)");
  f.AddInt("max-batch-delay-ms", &max_batch_delay_ms, "dynamic: longest wait for a full batch (default 10)");
}

absl::StatusOr<EngineConfig> EngineFlags::ToConfig(uint64_t seed, const std::filesystem::path& model_dir) const {
  EngineConfig c;
  auto in_int32 = [](const char* flag, int64_t v) -> absl::Status {
    if (v < 0 || v > (int64_t{1} << 30)) return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", v, ": out of range"));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(in_int32("max-num-seqs", max_num_seqs));
  RETURN_IF_ERROR(in_int32("block-size", block_size));
  RETURN_IF_ERROR(in_int32("batch-size", batch_size));
  RETURN_IF_ERROR(in_int32("num-kv-blocks", num_kv_blocks));
  c.scheduler.max_num_batched_tokens =
      max_num_batched_tokens != -1 ? max_num_batched_tokens
                                   : (no_chunked_prefill ? kDefaultBatchedTokensUnchunked : kDefaultBatchedTokens);
  c.scheduler.max_num_seqs = static_cast<int32_t>(max_num_seqs);
  c.scheduler.enable_chunked_prefill = !no_chunked_prefill;
  ASSIGN_OR_RETURN(c.scheduler.batching, ParseBatchingStrategy(batching));
  if (scheduling_policy == "fcfs") {
    c.scheduler.queue_policy = QueuePolicy::kFcfs;
  } else if (scheduling_policy == "priority") {
    c.scheduler.queue_policy = QueuePolicy::kPriority;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--scheduling-policy '", scheduling_policy, "': must be fcfs or priority"));
  }
  c.scheduler.batch_size = static_cast<int32_t>(batch_size);
  c.scheduler.max_batch_delay_ms = max_batch_delay_ms;
  c.block_size = static_cast<int32_t>(block_size);
  c.num_kv_blocks = num_kv_blocks;
  if (kv_cache_memory_mib <= 0) return absl::InvalidArgumentError("--kv-cache-memory: must be > 0");
  c.kv_cache_memory_bytes = kv_cache_memory_mib << 20;
  if (kv_cache_dtype == "auto" || dtype == "auto") {
    // Only the headers are read here; the loader maps the same files again.
    ASSIGN_OR_RETURN(const DType file_dtype, CheckpointDtype(model_dir));
    c.kv_dtype = AutoKvCacheDtype(file_dtype);
    c.precision = AutoMatMulPrecision(file_dtype, kernels::Bf16MatMulIsFast());
  }
  if (kv_cache_dtype != "auto") {
    ASSIGN_OR_RETURN(c.kv_dtype, ParseKvCacheDtype(kv_cache_dtype));
  }
  if (dtype != "auto") {
    ASSIGN_OR_RETURN(c.precision, ParseMatMulDtype(dtype));
  }
  ASSIGN_OR_RETURN(c.quantization.scheme, ParseQuantization(quantization));
  c.enable_prefix_caching = !no_prefix_caching;
  c.seed = seed;
  RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace tandem::cli
