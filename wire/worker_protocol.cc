#include "wire/worker_protocol.h"

namespace tandem {

v1::ResolvedSampling ToProto(const SamplingParams& p, uint64_t seed) {
  v1::ResolvedSampling s;
  s.set_temperature(p.temperature);
  s.set_top_p(p.top_p);
  s.set_top_k(p.top_k);
  s.set_min_p(p.min_p);
  s.set_repetition_penalty(p.repetition_penalty);
  s.set_frequency_penalty(p.frequency_penalty);
  s.set_presence_penalty(p.presence_penalty);
  s.set_max_tokens(p.max_tokens);
  s.set_seed(p.seed.value_or(seed));
  for (int32_t id : p.stop_token_ids) s.add_stop_token_ids(static_cast<uint32_t>(id));
  s.set_ignore_eos(p.ignore_eos);
  s.set_logprobs(p.logprobs);
  return s;
}

SamplingParams FromProto(const v1::ResolvedSampling& s) {
  SamplingParams p;
  p.temperature = s.temperature();
  p.top_p = s.top_p();
  p.top_k = s.top_k();
  p.min_p = s.min_p();
  p.repetition_penalty = s.repetition_penalty();
  p.frequency_penalty = s.frequency_penalty();
  p.presence_penalty = s.presence_penalty();
  p.max_tokens = s.max_tokens();
  p.seed = s.seed();
  for (uint32_t id : s.stop_token_ids()) p.stop_token_ids.push_back(static_cast<int32_t>(id));
  p.ignore_eos = s.ignore_eos();
  p.logprobs = s.logprobs();
  return p;
}

void ToProto(const SampledToken& t, v1::Logprobs* out) {
  out->set_token_id(static_cast<uint32_t>(t.token_id));
  out->set_logprob(t.logprob);
  for (const auto& [id, lp] : t.top_logprobs) {
    v1::TokenLogprob* top = out->add_top_logprobs();
    top->set_token_id(static_cast<uint32_t>(id));
    top->set_logprob(lp);
  }
}

SampledToken FromProto(const v1::Logprobs& lp) {
  SampledToken t;
  t.token_id = static_cast<int32_t>(lp.token_id());
  t.logprob = lp.logprob();
  for (const auto& top : lp.top_logprobs()) {
    t.top_logprobs.emplace_back(static_cast<int32_t>(top.token_id()), top.logprob());
  }
  return t;
}

}  // namespace tandem
