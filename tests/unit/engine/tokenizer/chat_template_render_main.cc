// tandem_chat_template_render: test helper for chat_template_test.py. Reads
// a JSON array of cases from stdin, each {"template", "bos_token",
// "eos_token", "messages", "add_generation_prompt", "extra"?}, renders each
// with ChatTemplate, and writes a JSON array of {"ok": true, "output"} or
// {"ok": false, "error"} to stdout.
#include <iostream>
#include <iterator>
#include <string>

#include "engine/tokenizer/chat_template.h"

int main() {
  using tandem::jinja::Json;
  const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  const Json cases = Json::parse(input);
  Json results = Json::array();
  for (const Json& c : cases) {
    absl::StatusOr<tandem::ChatTemplate> t = tandem::ChatTemplate::FromSource(
        c.at("template").get<std::string>(), c.value("bos_token", ""), c.value("eos_token", ""));
    absl::StatusOr<std::string> out = t.ok() ? t->Render(c.at("messages"), c.value("add_generation_prompt", false),
                                                         c.value("extra", Json::object()))
                                             : absl::StatusOr<std::string>(t.status());
    if (out.ok()) {
      results.push_back({{"ok", true}, {"output", *out}});
    } else {
      results.push_back({{"ok", false}, {"error", std::string(out.status().message())}});
    }
  }
  std::cout << results.dump() << "\n";
  return 0;
}
