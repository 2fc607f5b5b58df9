#include "engine/core/output_processor.h"

namespace tandem {

void OutputProcessor::Add(const std::string& request_id, std::span<const int32_t> prompt_ids,
                          std::vector<std::string> stop_strings) {
  Stream s{tokenizer_ ? std::make_unique<IncrementalDecoder>(*tokenizer_, prompt_ids) : nullptr,
           StopStringMatcher(std::move(stop_strings))};
  streams_.insert_or_assign(request_id, std::move(s));
}

std::vector<TextOutput> OutputProcessor::Process(LlmEngine& engine, const std::vector<RequestOutput>& outputs) {
  std::vector<TextOutput> result;
  for (const RequestOutput& o : outputs) {
    TextOutput t{o.request_id, o.new_token_ids, o.new_samples, "", o.finished, o.finish_reason};
    auto it = streams_.find(o.request_id);
    if (it != streams_.end() && it->second.decoder) {
      Stream& s = it->second;
      for (int32_t id : o.new_token_ids) {
        t.new_text += s.stops.Feed(s.decoder->Add(id));
        if (s.stops.stopped()) break;
      }
      if (s.stops.stopped()) {
        if (!t.finished) engine.Finish(o.request_id, FinishReason::kStop);
        t.finished = true;
        t.finish_reason = FinishReason::kStop;
      } else if (t.finished) {
        t.new_text += s.stops.Feed(s.decoder->Flush());
        t.new_text += s.stops.Flush();
        if (s.stops.stopped()) t.finish_reason = FinishReason::kStop;
      }
    }
    if (t.finished) streams_.erase(o.request_id);
    result.push_back(std::move(t));
  }
  return result;
}

}  // namespace tandem
