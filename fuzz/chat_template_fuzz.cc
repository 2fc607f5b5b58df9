// Fuzz target: jinja::Template (the chat template engine) on an arbitrary
// template and variables. Input: template source [NUL variables JSON]; the
// variables, when they parse as an object (nesting checked first), are
// rendered over; otherwise a fixed conversation is.
// Asserts: Parse and Render never crash or throw; they fail only with
// InvalidArgument (never Internal, which would mean an exception escaped a
// builtin); output stays within max_output_bytes; a second render of the same
// inputs gives the same result (no state kept between renders).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/json_nesting.h"
#include "engine/tokenizer/jinja/template.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tandem::jinja::Json;
  const auto [source, variables] = tandem::fuzz::SplitAtNul(tandem::fuzz::AsView(data, size));
  absl::StatusOr<tandem::jinja::Template> t = tandem::jinja::Template::Parse(source);
  if (!t.ok()) {
    FUZZ_CHECK(t.status().code() == absl::StatusCode::kInvalidArgument, t.status().ToString());
    return 0;
  }
  Json context = {{"messages", Json::array({{{"role", "system"}, {"content", "Be brief."}},
                                            {{"role", "user"}, {"content", "Hi"}},
                                            {{"role", "assistant"}, {"content", "Hello"}}})},
                  {"add_generation_prompt", true},
                  {"bos_token", "<s>"},
                  {"eos_token", "</s>"}};
  if (variables.has_value() && tandem::CheckJsonNesting(*variables).ok()) {
    Json parsed = Json::parse(*variables, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) context = std::move(parsed);
  }
  // Small limits keep each input fast.
  tandem::jinja::RenderLimits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_loop_iterations = 10'000;
  limits.max_work_bytes = 1 << 22;
  absl::StatusOr<std::string> first = t->Render(context, limits);
  if (first.ok()) {
    FUZZ_CHECK(first->size() <= limits.max_output_bytes, "output over the limit");
  } else {
    FUZZ_CHECK(first.status().code() == absl::StatusCode::kInvalidArgument, first.status().ToString());
  }
  if (source.find("strftime_now") == std::string_view::npos) {
    absl::StatusOr<std::string> second = t->Render(context, limits);
    FUZZ_CHECK(first.status() == second.status(), "renders differ in status");
    FUZZ_CHECK(!first.ok() || *first == *second, "renders differ in output");
  }
  return 0;
}
