// Conversions between the worker API's messages and the engine's plain value
// types (SamplingParams, SampledToken), shared by the router and both worker
// roles, so each side reads and writes the wire the same way. They live here,
// not in proto/, so the generated code depends on nothing of ours, and not
// in the engine, whose code never sees the protos.
// Thread-safety: pure functions.
#pragma once

#include "engine/sampler/sampled_token.h"
#include "engine/sampler/sampling_params.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// The router always sets a seed, so prefill and decode draw from one stream.
v1::ResolvedSampling ToProto(const SamplingParams& p, uint64_t seed);
SamplingParams FromProto(const v1::ResolvedSampling& s);

void ToProto(const SampledToken& t, v1::Logprobs* out);
SampledToken FromProto(const v1::Logprobs& lp);

}  // namespace tandem
