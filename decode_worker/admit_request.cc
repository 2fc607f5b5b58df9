// EngineRequestFromAdmit / FirstTokenOf: see admit_request.h.
#include "decode_worker/admit_request.h"

#include "wire/worker_protocol.h"

namespace tandem {

EngineRequest EngineRequestFromAdmit(const v1::AdmitRequest& request) {
  EngineRequest r;
  r.request_id = request.request_id();
  r.prompt_token_ids.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  r.sampling = FromProto(request.sampling());
  r.priority = request.priority();
  r.replayed_token_ids.assign(request.replayed_token_ids().begin(), request.replayed_token_ids().end());
  // A prefix this worker holds already need not be shipped again.
  r.reuse_cached_prefix = true;
  return r;
}

int32_t FirstTokenOf(const v1::DecodeRequest& request) { return static_cast<int32_t>(request.first_token_id()); }

}  // namespace tandem
