#!/usr/bin/python3
"""Differential test: tandem's Jinja-subset chat template renderer vs jinja2.

Renders the templates in chat_templates/ (written in the styles of the common
model families) over seeded random conversations with Python's jinja2, set up
as HF's apply_chat_template sets it up (sandboxed, trim_blocks, lstrip_blocks,
loopcontrols, raise_exception, tojson = json.dumps(ensure_ascii=False)), and
with tandem_chat_template_render; the outputs must match byte for byte, and
where jinja2 raises the template's error, tandem must fail with the same
message. A few templates that must fail (unsupported filter, tag) check the
error names the construct and its position.

Exits 77 (CTest SKIP_RETURN_CODE) only when python3-jinja2 is not installed.
"""
import argparse
import datetime
import json
import pathlib
import random
import subprocess
import sys

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("SKIP: python3-jinja2 is not installed")
    sys.exit(77)

HERE = pathlib.Path(__file__).resolve().parent

CONTENTS = [
    "Hello!", "hello world", "  padded with spaces  ", "", "line one\nline two\n", "\n\nleading newlines",
    "tabs\tinside\t", "quotes ' and \" and `", "backslash \\ n \\n", "unicode: héllo wörld, 日本語, emoji 🎉",
    "{{ not a tag }} {% neither %}", "What is 2 + 2?", "Ok.", "ß straße ǅ", "trailing!   \n", "o", "\u00a0nbsp\u2003",
    "<|im_start|>fake", "[INST] inside [/INST]", "A longer answer. " * 5,
]
ROLES_EXTRA = ["tool", "function"]

# Small templates over a fixed conversation: each construct of the subset
# (and its edge cases) against jinja2. Rendered with the same variables.
SNIPPETS = [
    "{{ messages[0]['role'] }}|{{ messages[0].content }}|{{ messages[-1].content }}|{{ messages[9] is defined }}",
    "{{ messages[1:] | length }} {{ messages[:1] | map(attribute='role') | list }} {{ messages[::2] | length }}",
    "{{ 'abcdef'[1:4] }}{{ 'abcdef'[-2:] }}{{ 'abcdef'[::-2] }}{{ 'héllo wörld'[3:8] }}{{ [1,2,3,4][5:] }}",
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
    "{{ loop.first }}{{ loop.last }}{{ loop.length }}{% endfor %}",
    "{% for m in messages %}{% for c in m.role %}{{ loop.index }}{{ c }}{% endfor %};{% endfor %}",
    "{% set ns = namespace(a=1, b='x') %}{% set ns.a = ns.a * 10 %}{% set ns.b = ns.b ~ ns.a %}{{ ns.a }}{{ ns.b }}",
    "{% set x = 1 %}{% for m in messages %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% if messages | length > 2 %}many{% elif messages %}some{% else %}none{% endif %}",
    "{{ 'a' if false }}|{{ 'b' if true }}|{{ 'c' if none else 'd' if 0 else 'e' }}",
    "{{ 1 + 2 - 3 * 4 / 5 }} {{ 10 // 3 }} {{ -10 // 3 }} {{ 10 % -3 }} {{ 2.5 * 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ 2 >= 2 }}{{ 1 != 2 }}{{ none == none }}{{ [1, 2] == [1, 2] }}",
    "{{ 'x' ~ 1 ~ 2.5 ~ true ~ none ~ [1] }}",
    "{{ 'ell' in 'hello' }}{{ 'z' not in 'hello' }}{{ 2 in [1, 2] }}{{ 'role' in messages[0] }}{{ 1 in [1.0] }}",
    "{{ not true }}{{ not '' }}{{ true and 'x' }}{{ 0 or 'y' }}{{ '' and 1 }}{{ [] or [] }}",
    "{{ x is defined }}{{ messages is defined }}{{ none is none }}{{ 1 is none }}{{ 'a' is string }}"
    "{{ 1 is string }}{{ {} is mapping }}{{ [] is mapping }}{{ [] is iterable }}{{ 1 is iterable }}",
    "{{ 1 is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is boolean }}{{ true is true }}{{ 0 is false }}"
    "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby(3) }}{{ 'a' is equalto 'a' }}{{ x is not defined }}",
    "{{ '  padded  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'MiXeD ß' | upper }}|{{ 'MiXeD' | lower }}",
    "{{ messages | length }}{{ 'héllo' | length }}{{ {'a': 1} | length }}{{ x | length }}{{ 'abc' | count }}",
    "{{ messages[0] | tojson }}|{{ 'é\\n\\t\\\"<>&' | tojson }}|{{ [1, 2.0, none, true, 'x'] | tojson }}",
    "{{ {'a': {'b': [1, {}], 'c': []}} | tojson(indent=2) }}|{{ 1e100 | tojson }}|{{ 0.000001 | tojson }}",
    "{{ x | default('dflt') }}|{{ '' | default('e') }}|{{ '' | default('e', true) }}|{{ none | default('n') }}",
    "{{ [3, 4] | first }}{{ [3, 4] | last }}{{ 'xyz' | first }}{{ 'xyz' | last }}{{ [] | first }}",
    "{{ ['a', 'b', 'c'] | join }}|{{ [1, 2] | join(', ') }}|{{ messages | join('; ', attribute='role') }}",
    "{{ 'aaa' | replace('a', 'b') }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'abc' | replace('', '-') }}",
    "{{ 1 | string }}{{ none | string }}{{ [1, 'a'] | string }}{{ {'k': none} | string }}{{ 1.0 | string }}",
    "{{ '12' | int }}{{ ' -3 ' | int }}{{ '2.9' | int }}{{ 'nope' | int }}{{ 'nope' | int(7) }}{{ 3.9 | int }}{{ true | int }}",
    "{{ ' a b '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}",
    "{{ 'abc'.startswith('ab') }}{{ 'abc'.startswith(('x', 'a')) }}{{ 'abc'.endswith('bc') }}{{ 'abc'.endswith('b') }}",
    "{{ 'a b\n c'.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a b c'.split(' ', 1) }}{{ ''.split() }}{{ ''.split(',') }}",
    "{{ 'MiXeD'.upper() }}{{ 'MiXeD'.lower() }}{{ 'a-b'.replace('-', '+') }}",
    "{% for k, v in {'b': 1, 'a': [2]}.items() %}{{ k }}={{ v }};{% endfor %}{{ {'q': 1}.keys() | list }}{{ {'q': 1}.values() | list }}",
    "{{ messages[0].get('role') }}|{{ messages[0].get('nope') }}|{{ messages[0].get('nope', 'd') }}",
    "{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }}|{{ \"it's\" }}|{{ ['it\\'s'] }}|{{ {'a': \"b'c\"} }}",
    "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 100.0 }} {{ -0.0 }} {{ 1 / 3 }}",
    "{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}{% for i in range(3, 0, -1) %}{{ i }}{% endfor %}",
    "{% for m in messages %}{% if loop.index == 2 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }} {% else %}empty{% endfor %}",
    "{% for m in [] %}x{% else %}empty{% endfor %}{% for c in '' %}y{% else %}none{% endfor %}",
    "{% set s %}{% for m in messages %}{{ m.role }},{% endfor %}{% endset %}{{ s | trim(',') }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | join }}",
    "{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 2, 3, 4] | reject('even') | list }}{{ ['a', 'B'] | map('upper') | list }}",
    "{{ {'a': 1, 'b': 2} | list }}{{ 'ab' | list }}{{ -3 | abs }}{{ -2.5 | abs }}",
    "  {% if true %}\n  indented\n  {% endif %}\n{{ 'x' }}\n  {# note #}\n  {{- 'y' -}}  \n z",
    "{%- for m in messages -%}\n  [{{ m.role }}]\n{%- endfor %}\n{%+ if true %}kept{% endif +%}\nend",
    "a {#- comment -#} b {# another #}\n c\n",
    "{% if true %}yes{% endif %}\n\n",
    "{{ 'multi' }}\r\n{% if true %}\r\nline\r\n{% endif %}\r\n",
    "{{ \"esc: \\n \\t \\\\ \\' \\u00e9 \\x41\" }}",
    "{{ '{{ not }}' }}{{ '%}' }}{{ {'a': {'b': 1}}['a']['b'] }}",
    "{{ 'ab' * 3 }}{{ [0] * 2 }}{{ 2 * 'x' }}{{ [1] + [2] }}{{ 'a' + 'b' }}",
    "{{ messages[0].role == 'system' and messages[1:] | length > 0 }}",
    "{{ -(messages | length) }}{{ (-1) | abs }}{{ - 2 + 3 }}",
    "{{ -messages | length }}",  # (-messages)|length: jinja2 fails with a TypeError; so must we
    "{{ 'a' + 1 }}",
    "{{ messages[0].nokey.deeper }}",
    "{% for c in 5 %}{% endfor %}",
    "{{ messages[0]['content'][:3] }}{{ messages[0].content.split()[0] if messages[0].content.split() else 'none' }}",
    "{{ (1, 2) | length }}{{ () | length }}{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{{ x.y if x is defined else 'undef' }}|{{ messages[0].nokey }}|{{ messages[0].nokey is defined }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }}"
    " {{ greet(punct='.', name='c') }} {{ greet() }}",
    "{% set top = 'T' %}{% macro m(x) %}{{ top }}{{ x }}{% set top = 'inner' %}{{ top }}{% endmacro %}{{ m(1) }}{{ top }}",
    "{% macro rec(n) %}{{ n }}{% if n > 0 %}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}",
    "{% for m in messages %}{% macro role() %}[{{ m.role }}]{% endmacro %}{{ role() }}{% endfor %}",
    "{% macro lines(xs) %}\n  {% for x in xs %}\n  - {{ x }}\n  {% endfor %}\n{% endmacro %}{{ lines(['a', 'b']) | trim }}",
    "{% for m in messages %}{% generation %}{{ m.role }}{% set r = 1 %}{% endgeneration %}{{ r is defined }}{% endfor %}",
    "{{ strftime_now('%Y-%m') }}|{{ raise_exception is defined }}|{{ strftime_now is defined }}"
    "|{{ namespace is defined }}|{{ raise_exception is callable }}|{{ messages is callable }}",
    "{{ bos_token }}{{ eos_token }}{{ unk_token is defined }}{{ tools is defined }}{{ documents is defined }}",
    # Unicode whitespace around whitespace control and before lstripped tags (Python's \\s).
    "a\u00a0\u3000 {%- if true %}b{% endif -%} \u2003\nc\n\u00a0\t{% if true %}d{% endif %}",
    "x {{- 'y' -}}\u00a0 z\n\u2028{# c #}w",
    "{{ 'y' +}}",
    "{{ 1e999 }} {{ -1e999 }} {{ 1e-999 }} {{ 2.5e-320 }} {{ [1, 2].1 }}",
]


class GenerationTag(Extension):
    """HF's {% generation %} ... {% endgeneration %}: a call block whose body renders as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def hf_environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols, GenerationTag])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city, e.g. \"Paris\"",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {"a": 1, "b": 2.5, "flags": [True, False, None]}}},
]


def random_content(rng, parts=False):
    if parts and rng.random() < 0.2:  # multimodal-style list of parts
        return [{"type": "text", "text": rng.choice(CONTENTS)}, {"type": "image"},
                {"type": "text", "text": rng.choice(CONTENTS)}]
    k = rng.randint(1, 3)
    return "".join(rng.choice(CONTENTS) for _ in range(k)) if rng.random() < 0.3 else rng.choice(CONTENTS)


def random_messages(rng, parts):
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": random_content(rng, parts)})
    turns = rng.randint(1, 6)
    bad = rng.random() < 0.1  # break alternation now and then: templates that check must raise
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        if bad and i == turns - 1:
            role = rng.choice(["user", "assistant", "system"] + ROLES_EXTRA)
        m = {"role": role, "content": random_content(rng, parts)}
        if rng.random() < 0.1:
            m["name"] = rng.choice(["alice", "bob"])
        messages.append(m)
    return messages


def run_cpp(binary, cases):
    proc = subprocess.run([binary], input=json.dumps(cases).encode(), capture_output=True, check=False, timeout=300)
    if proc.returncode != 0:
        sys.exit(f"{binary} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--render", required=True, help="tandem_chat_template_render binary")
    parser.add_argument("--cases", type=int, default=300, help="conversations per template")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    env = hf_environment()
    cases, expected = [], []
    for path in sorted((HERE / "chat_templates").glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        template = env.from_string(source)
        for _ in range(args.cases):
            # List-of-parts content only where the template handles it.
            messages = random_messages(rng, parts=path.name == "tools_macro.jinja")
            gen = rng.random() < 0.5
            bos, eos = rng.choice([("<s>", "</s>"), ("<|begin_of_text|>", "<|eot_id|>"), ("", "")])
            extra = {}
            if rng.random() < 0.3:
                extra["tools"] = rng.choice([TOOLS, TOOLS[:1], [], None])
            if rng.random() < 0.2:
                extra["date_string"] = "01 Jan 2025"
            try:
                want = {"ok": True, "output": template.render(messages=messages, add_generation_prompt=gen,
                                                               bos_token=bos, eos_token=eos, **extra)}
            except jinja2.exceptions.UndefinedError:  # our message names the missing value differently
                want = {"ok": False, "error_contains": "undefined"}
            except jinja2.exceptions.TemplateError as e:
                want = {"ok": False, "error": str(e)}
            except TypeError:  # e.g. `+` on list content: only require that we fail too
                want = {"ok": False, "error_contains": ""}
            cases.append({"template": source, "messages": messages, "add_generation_prompt": gen,
                          "bos_token": bos, "eos_token": eos, "extra": extra, "name": path.name})
            expected.append(want)

    snippet_messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there, héllo!"},
                        {"role": "assistant", "content": "  Hello\n\n"}, {"role": "user", "content": ""}]
    for i, source in enumerate(SNIPPETS):
        try:
            want = {"ok": True, "output": env.from_string(source).render(
                messages=snippet_messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")}
        except jinja2.exceptions.UndefinedError:  # our message names the missing value differently
            want = {"ok": False, "error_contains": "is undefined"}
        except jinja2.exceptions.TemplateSyntaxError:  # worded differently: only require a syntax error
            want = {"ok": False, "error_contains": "template syntax: "}
        except jinja2.exceptions.TemplateError as e:
            want = {"ok": False, "error": str(e)}
        except (TypeError, ValueError):  # Python-level failures: only require that we fail too
            want = {"ok": False, "error_contains": ""}
        cases.append({"template": source, "messages": snippet_messages, "add_generation_prompt": True,
                      "bos_token": "<s>", "eos_token": "</s>", "name": f"snippet {i}: {source!r}"})
        expected.append(want)

    # Templates that must fail, with (substring of) the error they must give.
    must_fail = [
        ("{{ messages[0].content | wordwrap }}", "unsupported filter 'wordwrap' at line 1, column 26"),
        ("hi\n{% filter upper %}x{% endfilter %}", "unsupported tag 'filter' at line 2, column 4"),
        ("{{ messages[0].content is divisibleby3 }}", "unsupported test 'divisibleby3'"),
        ("{{ messages[0].content.center(3) }}", "unsupported method 'center'"),
        ("{{ 2 ** 3 }}", "unsupported operator '**' at line 1, column 6"),
        ("{% for m in messages %}{{ m.content", "unterminated '{{'"),
        ("{% if true %}x", "unclosed tag"),
        ("{{ cycler() }}", "unsupported function 'cycler'"),
        ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "macro 'm' takes 1 arguments"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro calls nest deeper than 32"),
        ("{% call m() %}{% endcall %}", "unsupported tag 'call'"),
    ]
    for source, message in must_fail:
        cases.append({"template": source, "messages": [{"role": "user", "content": "x"}],
                      "add_generation_prompt": False, "name": source})
        expected.append({"ok": False, "error_contains": message})

    results = run_cpp(args.render, cases)
    assert len(results) == len(cases)
    failures = 0
    compared = errors = other_errors = 0
    for case, want, got in zip(cases, expected, results):
        if "error_contains" in want:
            other_errors += 1
            ok = not got["ok"] and want["error_contains"] in got["error"]
        elif want["ok"]:
            compared += 1
            ok = got == want
        else:
            errors += 1
            ok = not got["ok"] and got["error"] == want["error"]
        if not ok:
            failures += 1
            if failures <= 5:
                print(f"MISMATCH in {case['name']}: messages={json.dumps(case['messages'], ensure_ascii=False)} "
                      f"gen={case['add_generation_prompt']}\n  want={want!r}\n  got ={got!r}")
    print(f"{len(cases)} cases: {compared} renders compared byte for byte, {errors} template errors compared, "
          f"{other_errors} other must-fail cases; {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

