#include "tools/tandem/colocated_backend.h"

namespace tandem {
namespace {

ChunkFinish ToChunkFinish(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return ChunkFinish::kLength;
    case FinishReason::kStop: return ChunkFinish::kStop;
    default: return ChunkFinish::kNone;
  }
}

}  // namespace

void ColocatedBackend::Start(const std::string& id, ValidatedRequest request, Sink sink) {
  EngineRequest r;
  r.request_id = id;
  r.prompt_token_ids = std::move(request.prompt_token_ids);
  r.sampling = request.sampling;
  r.priority = request.priority;
  engine_->Submit(std::move(r), std::move(request.stop), [sink = std::move(sink)](const StreamEvent& e) {
    if (!e.status.ok()) {
      sink(e.status, {});
      return;
    }
    GenerationChunk c;
    c.text = e.chunk.new_text;
    c.token_ids = e.chunk.new_token_ids;
    c.logprobs = e.chunk.new_samples;
    c.finish = e.chunk.finished ? ToChunkFinish(e.chunk.finish_reason) : ChunkFinish::kNone;
    if (e.chunk.finished && c.finish == ChunkFinish::kNone) {
      sink(absl::CancelledError("request aborted"), {});
      return;
    }
    sink(absl::OkStatus(), std::move(c));
  });
}

}  // namespace tandem
