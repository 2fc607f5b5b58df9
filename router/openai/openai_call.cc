#include "router/openai/openai_call.h"

#include "router/client_status.h"

namespace tandem::openai {
namespace {

std::string FinishLabel(ChunkFinish f) { return f == ChunkFinish::kStop ? "stop" : "length"; }

}  // namespace

OpenAiCall::OpenAiCall(CallOptions options, std::shared_ptr<http::Responder> responder, GenerationBackend* backend,
                       RequestMetrics* metrics, std::shared_ptr<void> hold)
    : options_(std::move(options)),
      responder_(std::move(responder)),
      backend_(backend),
      metrics_(metrics),
      hold_(std::move(hold)) {}

void OpenAiCall::Start(std::vector<ValidatedRequest> requests) {
  const size_t n = options_.backend_ids.size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    choices_.resize(n);
    unfinished_ = n;
    for (size_t i = 0; i < n; ++i) {
      if (metrics_ != nullptr) choices_[i].tracker = metrics_->Begin(options_.prompt_tokens[i]);
      choices_[i].text = options_.echo[i];
      choices_[i].text_bytes = options_.echo[i].size();
    }
    if (options_.stream) {
      responder_->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
      // Chat streams open each choice with its role; completions with echo
      // send the prompt text first.
      for (size_t i = 0; i < n; ++i) {
        ChoiceOutput first;
        first.index = static_cast<uint32_t>(i);
        if (options_.header.endpoint == Endpoint::kChatCompletions) {
          first.role = true;
        } else if (!options_.echo[i].empty()) {
          first.text = options_.echo[i];
        } else {
          continue;
        }
        responder_->Write(ChunkEvent(options_.header, first, options_.logprobs, 0, options_.include_usage));
      }
    }
  }
  std::weak_ptr<OpenAiCall> weak = weak_from_this();
  responder_->OnClientGone([weak] {
    if (std::shared_ptr<OpenAiCall> self = weak.lock()) self->OnClientGone();
  });
  for (size_t i = 0; i < n; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_) return;  // failed or gone while starting: the rest never starts
    }
    backend_->Start(options_.backend_ids[i], std::move(requests[i]),
                    [self = shared_from_this(), i](const absl::Status& st, GenerationChunk chunk) {
                      self->OnChunk(i, st, std::move(chunk));
                    });
    // A failure or departure between the check and this Start cancelled the
    // ids before this one existed: cancel it again now that it does.
    bool ended = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended = ended_ && choices_[i].finish == ChunkFinish::kNone;
    }
    if (ended) backend_->Cancel(options_.backend_ids[i]);
  }
}

void OpenAiCall::OnChunk(size_t i, const absl::Status& status, GenerationChunk chunk) {
  std::vector<std::string> cancel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    Choice& c = choices_[i];
    if (!status.ok()) {
      cancel = FailLocked(ToClientStatus(status));
    } else {
      c.tokens += chunk.token_ids.size();
      if (c.tracker) c.tracker->OnTokens(chunk.token_ids.size());
      const bool want_logprobs = options_.logprobs.top.has_value();
      if (options_.stream) {
        if (!chunk.text.empty() || (want_logprobs && !chunk.logprobs.empty()) || chunk.finish != ChunkFinish::kNone) {
          ChoiceOutput out;
          out.index = static_cast<uint32_t>(i);
          out.text = chunk.text;
          if (want_logprobs) out.logprobs = std::move(chunk.logprobs);
          out.finish = chunk.finish;
          responder_->Write(ChunkEvent(options_.header, out, options_.logprobs, c.text_bytes, options_.include_usage));
        }
        c.text_bytes += chunk.text.size();
      } else {
        c.text += chunk.text;
        if (want_logprobs) {
          for (SampledToken& t : chunk.logprobs) c.logprobs.push_back(std::move(t));
        }
      }
      if (chunk.finish != ChunkFinish::kNone) {
        c.finish = chunk.finish;
        if (c.tracker) c.tracker->End(FinishLabel(chunk.finish));
        if (--unfinished_ == 0) FinishLocked();
      }
    }
  }
  CancelAll(cancel);
}

void OpenAiCall::FinishLocked() {
  ended_ = true;
  UsageCounts usage{options_.usage_prompt_tokens, 0};
  int64_t used = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    usage.completion_tokens += choices_[i].tokens;
    used += options_.prompt_tokens[i] + static_cast<int64_t>(choices_[i].tokens);
  }
  // The key's slot is settled before the client can see the end (and start its next call).
  if (options_.on_used) options_.on_used(used);
  if (options_.stream) {
    if (options_.include_usage) responder_->Write(UsageEvent(options_.header, usage));
    responder_->Write(std::string(kDoneEvent));
    responder_->End();
  } else {
    std::vector<ChoiceOutput> out(choices_.size());
    for (size_t i = 0; i < choices_.size(); ++i) {
      out[i].index = static_cast<uint32_t>(i);
      out[i].text = std::move(choices_[i].text);
      out[i].logprobs = std::move(choices_[i].logprobs);
      out[i].finish = choices_[i].finish;
    }
    responder_->Respond(200, "application/json", ResponseBody(options_.header, out, usage, options_.logprobs));
  }
  if (options_.on_end) options_.on_end(200);
}

std::vector<std::string> OpenAiCall::FailLocked(const absl::Status& status) {
  ended_ = true;
  std::vector<std::string> cancel;
  int64_t used = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    used += options_.prompt_tokens[i] + static_cast<int64_t>(choices_[i].tokens);
    if (choices_[i].finish != ChunkFinish::kNone) continue;
    if (choices_[i].tracker) choices_[i].tracker->End(RequestMetrics::StatusLabel(status.code()));
    cancel.push_back(options_.backend_ids[i]);
  }
  if (options_.on_used) options_.on_used(used);
  const int http_status = HttpStatus(status.code());
  if (options_.stream) {
    responder_->Write(ErrorEvent(status));
    responder_->Write(std::string(kDoneEvent));
    responder_->End();
  } else {
    http::Headers headers;
    if (status.code() == absl::StatusCode::kResourceExhausted) {
      headers.emplace_back("Retry-After", std::to_string((kRetryPushbackMs + 999) / 1000));
    }
    responder_->Respond(http_status, "application/json", ErrorBody(status), std::move(headers));
  }
  if (options_.on_end) options_.on_end(http_status);
  return cancel;
}

void OpenAiCall::OnClientGone() {
  std::vector<std::string> cancel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (choices_[i].finish != ChunkFinish::kNone) continue;
      if (choices_[i].tracker) choices_[i].tracker->End(RequestMetrics::StatusLabel(absl::StatusCode::kCancelled));
      cancel.push_back(options_.backend_ids[i]);
    }
    if (options_.on_used) options_.on_used(-1);
    if (options_.on_end) options_.on_end(499);
  }
  CancelAll(cancel);
}

void OpenAiCall::CancelAll(const std::vector<std::string>& ids) {
  for (const std::string& id : ids) backend_->Cancel(id);
}

}  // namespace tandem::openai
