// Flags that configure an LlmEngine (shared by every command that runs one),
// spelled as vLLM's engine arguments are.
// Thread-safety: single-threaded use in main().
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/llm_engine.h"
#include "common/cli/cli_flags.h"

namespace tandem::cli {

// --kv-cache-dtype and --dtype values (also for commands that take only
// those two): InvalidArgument naming the flag and the accepted values.
absl::StatusOr<DType> ParseKvCacheDtype(const std::string& name);
absl::StatusOr<kernels::MatMulPrecision> ParseMatMulDtype(const std::string& name);
// --quantization: none | int8 | fp8 | int4. InvalidArgument naming the flag.
absl::StatusOr<Quantization> ParseQuantization(const std::string& name);

// The --kv-cache-dtype spelling of `dtype` ("fp32", "bf16", "fp16", "int8", "fp8").
std::string KvCacheDtypeName(DType dtype);
// What "auto" resolved to, as label pairs: dtype, kv_cache_dtype, cpu_isa,
// quantization (the metric tandem_engine_info carries them).
std::vector<std::pair<std::string, std::string>> EngineArithmeticLabels(const EngineConfig& config);
// The same as one line for start-up logs: "dtype bfloat16, kv-cache-dtype
// bf16, cpu avx512_bf16, quantization none".
std::string DescribeEngineArithmetic(const EngineConfig& config);

struct EngineFlags {
  // -1: unset; ToConfig picks kDefaultBatchedTokens (or, without chunked
  // prefill, kDefaultBatchedTokensUnchunked so whole prompts still fit).
  int64_t max_num_batched_tokens = -1;
  // Why 256 and not vLLM's 2048: on a CPU a 2048-token step takes over a
  // second, and every decode sequence and queued prompt waits for it. On the
  // 2-core serving benchmark (docs/performance.md), AMX host: 2048 gave TTFT
  // p50 2.5 s and 203 output tok/s, 512 gave 0.6 s and 227, 64-256 gave
  // 0.3-0.5 s and 255-300; AVX512_BF16 host without AMX (fp32 matmuls), A/B
  // twice: 512 gave 1.24 s and 158-160, 256 gave 0.66 s and 165 (128: 0.68 s,
  // 163). A step of 256 still amortises the weight reads over 256 rows.
  static constexpr int64_t kDefaultBatchedTokens = 256;
  static constexpr int64_t kDefaultBatchedTokensUnchunked = 2048;
  int64_t max_num_seqs = 64;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;
  int64_t kv_cache_memory_mib = 1024;
  // "auto": resolved by ToConfig from the checkpoint and the host
  // (engine/model/auto_dtype.h).
  std::string kv_cache_dtype = "auto";
  std::string dtype = "auto";
  std::string quantization = "none";
  bool no_prefix_caching = false;
  bool no_chunked_prefill = false;
  std::string batching = "paged";
  std::string scheduling_policy = "fcfs";
  int64_t batch_size = 8;
  int64_t max_batch_delay_ms = 10;

  void Register(FlagSet& flags);
  // The typed, validated engine configuration for the model in `model_dir`
  // (read only to resolve "auto" dtypes). InvalidArgument names the flag.
  absl::StatusOr<EngineConfig> ToConfig(uint64_t seed, const std::filesystem::path& model_dir) const;
};

}  // namespace tandem::cli
