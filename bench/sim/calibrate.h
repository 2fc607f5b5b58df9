// Calibration: times engine steps of known shapes on the real engine (the
// model and engine flags a worker would load) and fits the step cost model
// (step_cost.h) to them: prefill chunks of every length the step budget
// allows at several contexts, and decode steps of several batch sizes and
// contexts. Each shape is timed `repeats` times, one pass over all shapes
// per repeat; its median counts. Prefix
// caching is off so every step computes what its shape says. Three fits:
// one line over every step, a token curve over one-sequence steps (prefill
// workers), and decode steps alone (decode workers).
// Thread-safety: one calibration at a time per process (it owns an engine).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/sim/step_cost.h"
#include "nlohmann/json.hpp"

namespace tandem::sim {

struct CalibrationOptions {
  std::filesystem::path model;
  std::vector<std::string> engine_args;  // worker engine flags (--dtype, --max-num-batched-tokens, ...)
  int repeats = 3;
};

struct Calibration {
  std::vector<std::pair<StepShape, double>> samples;  // (shape, median seconds)
  StepCostModel model;              // every step, one line (reported; what older calibrations had)
  double median_abs_rel_error = 0;  // of `model` over the samples
  // Prefill workers': the token curve over the one-sequence steps
  // (StepCostModel::FitPrefill). A calibration written before it had one
  // reads as `model`.
  StepCostModel prefill_model;
  double prefill_median_abs_rel_error = 0;  // of `prefill_model` over the one-sequence samples
  // Decode steps only, by relative error (StepCostModel::FitDecode): decode
  // workers'. A calibration written before it had one reads as `model`.
  StepCostModel decode_model;
  double decode_median_abs_rel_error = 0;  // of `decode_model` over the decode samples
  int32_t block_size = 16;
  int64_t kv_blocks = 0;            // the pool the engine made with these flags
  double kv_bytes_per_block = 0;    // K and V of one block over every layer
  int64_t max_num_batched_tokens = 0;
  int max_position = 0;

  nlohmann::json ToJson() const;
  static absl::StatusOr<Calibration> FromJson(const nlohmann::json& j);  // samples too, when it has them
};

absl::StatusOr<Calibration> Calibrate(const CalibrationOptions& options);

// Fits the step cost models (and their errors) to `cal.samples` again: a
// calibration written by an older tandem-sim gets the newer fits without
// timing the engine again.
absl::Status Refit(Calibration& cal);

}  // namespace tandem::sim
