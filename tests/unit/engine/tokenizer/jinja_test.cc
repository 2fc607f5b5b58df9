// Unit tests for the jinja/ engine pieces and ChatTemplate loading.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/jinja/template.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::jinja {
namespace {

using ::testing::HasSubstr;

std::string Render(const std::string& source, const Json& context = Json::object()) {
  absl::StatusOr<Template> t = Template::Parse(source);
  if (!t.ok()) return "PARSE ERROR: " + std::string(t.status().message());
  absl::StatusOr<std::string> out = t->Render(context);
  if (!out.ok()) return "RENDER ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(JinjaTest, WhitespaceControl) {
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%- if true %}b{% endif -%}\n  c"), "abc");
  // trim_blocks drops the newline after a tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(Render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
  EXPECT_EQ(Render("  {{ 'v' }}\n"), "  v");            // no lstrip for {{ ; trailing newline dropped
  EXPECT_EQ(Render("a\n  {# comment #}\nb"), "a\nb");  // comments trim and lstrip like blocks
  EXPECT_EQ(Render("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");
  EXPECT_EQ(Render("x\r\ny\r\n"), "x\ny");
}

TEST(JinjaTest, LoopVariables) {
  EXPECT_EQ(Render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
                   "{{ loop.length }}{{ loop.revindex }};{% endfor %}"),
            "10TrueFalse33;21FalseFalse32;32FalseTrue31;");
  EXPECT_EQ(Render("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for x in [1,2,3,4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}"), "2/2 4/2 ");
  EXPECT_EQ(Render("{% for x in [1,2,3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}"), "13");
  EXPECT_EQ(Render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}"), "a=1,b=2,");
}

TEST(JinjaTest, SetScopingAndNamespace) {
  EXPECT_EQ(Render("{% set c = 0 %}{% for i in [1,2] %}{% set c = c + i %}{{ c }}{% endfor %}{{ c }}"), "120");
  EXPECT_EQ(Render("{% set ns = namespace(c=0) %}{% for i in [1,2] %}{% set ns.c = ns.c + i %}{% endfor %}{{ ns.c }}"),
            "3");
  EXPECT_EQ(Render("{% set x %}a{{ 1 }}{% endset %}[{{ x }}]"), "[a1]");
  EXPECT_THAT(Render("{% set y = 1 %}{% set y.a = 2 %}"), HasSubstr("not a namespace object"));
}

TEST(JinjaTest, MacrosAndGlobals) {
  EXPECT_EQ(Render("{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}{{ m() }}"),
            "<1d><23><d>");
  EXPECT_EQ(Render("{% for x in [1, 2] %}{% macro show() %}{{ x }}{% endmacro %}{{ show() }}{% endfor %}"), "12");
  EXPECT_EQ(Render("{% generation %}kept{% set g = 1 %}{% endgeneration %}{{ g is defined }}"), "keptFalse");
  EXPECT_EQ(Render("{{ raise_exception is defined }}{{ strftime_now is callable }}{{ strftime_now('%%') }}"),
            "TrueTrue%");
  EXPECT_THAT(Render("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}"), HasSubstr("macro calls nest deeper than 32"));
  EXPECT_THAT(Render("{% macro m() %}{% break %}{% endmacro %}"), HasSubstr("'break' outside a for loop"));
}

TEST(JinjaTest, Slicing) {
  EXPECT_EQ(Render("{{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[-1] }}", {{"xs", {1, 2, 3}}}),
            "[2, 3] [1, 2] [3, 2, 1] 3");
  EXPECT_EQ(Render("{{ 'héllo'[1:3] }}{{ 'héllo'[1] }}"), "élé");
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(Render("{{ x is defined }}{{ y is defined }}{{ n is none }}{{ s is string }}{{ d is mapping }}"
                   "{{ s is iterable }}{{ n is not none }}{{ 3 is number }}",
                   {{"x", 1}, {"n", nullptr}, {"s", "a"}, {"d", Json::object()}}),
            "TrueFalseTrueTrueTrueTrueFalseTrue");
  EXPECT_THAT(Render("{{ 1 is prime }}"), HasSubstr("PARSE ERROR: template syntax: unsupported test 'prime' at line 1, column 9"));
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(Render("{{ ' a b '|trim }}|{{ 'ab'|upper }}|{{ 'AB'|lower }}|{{ [1,2]|length }}|{{ 'héllo'|length }}"),
            "a b|AB|ab|2|5");
  EXPECT_EQ(Render("{{ x|default('d') }}|{{ ''|default('d', true) }}|{{ [1,2]|first }}{{ [1,2]|last }}"), "d|d|12");
  EXPECT_EQ(Render("{{ ['a','b']|join(', ') }}|{{ 'aXbX'|replace('X', '-') }}|{{ 3|string }}|{{ '7'|int + 1 }}"),
            "a, b|a-b-|3|8");
  EXPECT_EQ(Render("{{ {'a': 'é<', 'b': [1, 2.5, none, true]}|tojson }}"),
            "{\"a\": \"é<\", \"b\": [1, 2.5, null, true]}");
  EXPECT_EQ(Render("{{ [1]|tojson(indent=2) }}"), "[\n  1\n]");
  EXPECT_THAT(Render("{{ 'x'|wordwrap }}"), HasSubstr("PARSE ERROR: template syntax: unsupported filter 'wordwrap' at line 1, column 8"));
}

TEST(JinjaTest, MethodsAndOperators) {
  EXPECT_EQ(Render("{{ ' x '.strip() }}{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}"
                   "{{ 'a b  c'.split() }}{{ 'a,b'.split(',') }}{{ {'k': 1}.get('k') }}{{ {'k': 1}.get('z', 0) }}"),
            "xTrueTrue['a', 'b', 'c']['a', 'b']10");
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 'a' ~ 1 }} {{ 1 if false else 2 }}"),
            "7 3.5 3 2 a1 2");
  EXPECT_EQ(Render("{{ 'b' in 'abc' }}{{ 2 not in [1] }}{{ 'k' in {'k': 1} }}{{ 1 < 2 < 3 }}{{ not 1 }}"),
            "TrueTrueTrueTrueFalse");
  EXPECT_EQ(Render("{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 2.0 }} {{ none }} {{ [1, 'a'] }}"),
            "0.30000000000000004 1e+20 2.0 None [1, 'a']");
  EXPECT_THAT(Render("{{ 'x'.zfill(3) }}"), HasSubstr("unsupported method 'zfill'"));
}

TEST(JinjaTest, ErrorsNamePositions) {
  EXPECT_EQ(Render("ab\n  {% include 'x' %}"), "PARSE ERROR: template syntax: unsupported tag 'include' at line 2, column 6");
  EXPECT_EQ(Render("{{ raise_exception('bad role') }}"), "RENDER ERROR: bad role");
  EXPECT_EQ(Render("{{ x.y }}"), "RENDER ERROR: template render: 'x' is undefined at line 1, column 5");
  EXPECT_THAT(Render("{% if x %}"), HasSubstr("unclosed tag"));
  EXPECT_THAT(Render("{{ 1 + }}"), HasSubstr("expected an expression"));
}

TEST(JinjaTest, Limits) {
  absl::StatusOr<Template> t = Template::Parse("{% for i in range(100) %}{% for j in range(100) %}x{% endfor %}{% endfor %}");
  ASSERT_TRUE(t.ok());
  RenderLimits limits;
  limits.max_loop_iterations = 1000;
  EXPECT_THAT(std::string(t->Render(Json::object(), limits).status().message()), HasSubstr("loop iterations exceed"));
  limits = RenderLimits();
  limits.max_output_bytes = 100;
  EXPECT_THAT(std::string(t->Render(Json::object(), limits).status().message()), HasSubstr("output exceeds 100 bytes"));
  // Values grown by a loop: nesting, size and total work are bounded too.
  EXPECT_THAT(Render("{% set ns = namespace(x=[]) %}{% for i in range(200) %}{% set ns.x = [ns.x] %}{% endfor %}"),
              HasSubstr("value nests deeper than 128 levels"));
  EXPECT_THAT(Render("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
              HasSubstr("value exceeds 67108864 bytes"));
  EXPECT_THAT(Render("{% set ns = namespace(x=['ab']) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}"),
              HasSubstr("value exceeds 67108864 bytes"));
  absl::StatusOr<Template> grow = Template::Parse(
      "{% set s = 'x' * 1000 %}{% for i in range(100000) %}{% set t = s ~ i %}{% endfor %}");
  ASSERT_TRUE(grow.ok());
  limits = RenderLimits();
  limits.max_work_bytes = 1'000'000;
  EXPECT_THAT(std::string(grow->Render(Json::object(), limits).status().message()),
              HasSubstr("values built exceed 1000000 bytes"));
  Json deep_input = Json::array();
  for (int i = 0; i < 200; ++i) deep_input = Json::array({deep_input});
  EXPECT_THAT(std::string(Template::Parse("{{ x }}")->Render({{"x", deep_input}}).status().message()),
              HasSubstr("nest deeper than 128"));
  std::string deep;
  for (int i = 0; i < 500; ++i) deep += "(";
  EXPECT_THAT(Render("{{ " + deep + "1" + std::string(500, ')') + " }}"), HasSubstr("nests too deeply"));
}

TEST(ChatTemplateTest, FromTokenizerConfig) {
  Json config = {{"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"},
                 {"chat_template", Json::array({{{"name", "tool_use"}, {"template", "T"}},
                                                {{"name", "default"}, {"template", "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{% if add_generation_prompt %}>{% endif %}"}}})}};
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromTokenizerConfig(config);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = t->Render(Json::array({{{"role", "user"}, {"content", "hi"}}}), true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>hi</s>>");
  EXPECT_EQ(t->special_tokens(), Json({{"bos_token", "<s>"}, {"eos_token", "</s>"}}));
  EXPECT_TRUE(absl::IsNotFound(ChatTemplate::FromTokenizerConfig({{"bos_token", "<s>"}}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(t->Render(Json::object(), false).status()));
}

TEST(ChatTemplateTest, BundledModelHasPlainTextTemplate) {
  const char* src = std::getenv("TANDEM_SOURCE_DIR");
  const std::filesystem::path dir = std::filesystem::path(src != nullptr ? src : ".") / "models/tandem-shakespeare";
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out =
      t->Render(Json::array({{{"role", "system"}, {"content", "Speak as a bard."}},
                             {{"role", "user"}, {"content", "Hi"}},
                             {{"role", "assistant"}, {"content", "Hail"}},
                             {{"role", "user"}, {"content", "More"}}}),
                true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|begin_of_text|><|system|>\nSpeak as a bard.\n<|user|>\nHi\n<|assistant|>\nHail<|end_of_text|>\n"
            "<|user|>\nMore\n<|assistant|>\n");
  EXPECT_TRUE(absl::IsNotFound(ChatTemplate::FromModelDir(dir / "no-such-dir").status()));

  // --chat-template FILE: the file's template, the model's tokens.
  const std::filesystem::path file =
      std::filesystem::path(src != nullptr ? src : ".") / "tests/unit/engine/tokenizer/chat_templates/llama3.jinja";
  absl::StatusOr<ChatTemplate> from_file = ChatTemplate::FromFileForModel(file, dir);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->special_tokens(),
            Json({{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}, {"pad_token", "<|pad|>"}}));
  absl::StatusOr<std::string> llama = from_file->Render(Json::array({{{"role", "user"}, {"content", " Hi "}}}), false);
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(*llama, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_TRUE(absl::IsNotFound(ChatTemplate::FromFileForModel(dir / "missing.jinja", dir).status()));

  // The turn markers are ordinary text to this tokenizer (it has no turn
  // tokens); the only special ids are the template's BOS and the EOS that
  // closes the assistant turn. Encoded without adding BOS again.
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->TryEncode(*out, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::vector<int32_t> special;
  for (int32_t id : *ids) {
    if ((*tok)->IsSpecial(id)) special.push_back(id);
  }
  EXPECT_EQ(special, (std::vector<int32_t>{2045, 2046}));
  EXPECT_EQ(ids->front(), 2045);
  EXPECT_EQ((*tok)->Decode(*ids, /*skip_special_tokens=*/false), *out);
}

}  // namespace
}  // namespace tandem::jinja
