// The sampling parameters a request starts from before its own fields apply:
// the model's generation_config.json (temperature only when do_sample, as HF
// generate() does; otherwise greedy) and neutral values for the rest.
// Thread-safety: pure function.
#pragma once

#include "engine/model/model_config.h"
#include "engine/sampler/sampling_params.h"

namespace tandem {

inline SamplingParams DefaultSamplingParams(const ModelConfig::GenerationDefaults& d) {
  SamplingParams p;
  p.temperature = d.do_sample ? static_cast<float>(d.temperature) : 0.0f;
  p.top_p = static_cast<float>(d.top_p);
  p.top_k = d.top_k;
  p.repetition_penalty = static_cast<float>(d.repetition_penalty);
  return p;
}

}  // namespace tandem
