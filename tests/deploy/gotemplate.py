"""A renderer for the subset of Go text/template and Helm that the Tandem chart
(deploy/helm/tandem) uses, so the chart can be checked where no `helm` binary
exists. It is deliberately strict: anything outside the subset is an error,
so a template that strays from it fails the test instead of rendering wrong.
Three files: gotemplate_values.py (values, errors, Go's printing),
gotemplate_parse.py (lexer and parser) and this one (the executor, Helm's
functions, the chart's files); this module re-exports what callers use.

The subset (keep deploy/helm/tandem/templates inside it):

  Delimiters   {{ ... }}, with "{{- " / " -}}" trimming all whitespace
               (spaces, tabs, newlines) before / after, as Go does.
               {{/* comment */}} (also with trim markers). An action may not
               contain the text "}}" (not even inside a string).
  Data         .Values .Release .Chart (root object), "." and "$" (the data
               a template was executed with: the root, or include's argument),
               field chains .a.b / $x.a.b, variables $x := pipeline and
               $x = pipeline (scoped to the enclosing block, as in Go).
  Literals     "double-quoted" and `raw` strings, integers, true false nil.
  Pipelines    cmd | cmd | ..., parenthesised (sub pipelines); the piped
               value becomes the last argument.
  Actions      if / else if / else / end, range (over a list or a map, which
               goes in sorted key order; `range $k, $v := x` and
               `range $v := x`; else), with / else / end, define / end (top
               level), and the functions below. No `template`, `block`,
               `break`, `continue`.
  Functions    include NAME CTX, toYaml X, nindent N S, indent N S, quote X,
               default D X, printf FMT ARGS (verbs %s %d %v %q %%), list,
               dict, index M K, eq A B, ne A B, not X, and A B, or A B,
               join SEP LIST, sha256sum S, trunc N S, trimSuffix SUF S,
               toString X, required MSG X, fail MSG, add N N... and sub A B
               (integers only, as Sprig's int64 arithmetic), lt A B (two
               integers), int64 X.
  Printing     strings, integers and booleans as Go prints them; an
               integer of 1,000,000 or more only from int64/add/sub (Helm
               holds values.yaml numbers as float64 and prints those in
               exponent form). Floats, maps,
               lists and nil cannot be printed (Helm would print "<no value>"
               or Go's map syntax: never what a manifest wants). Floats are
               refused everywhere in values for the same reason.

Stricter than Helm on purpose: looking up a key that a map does not have is
an error (Helm prints an empty string), so a typo in a template or a value
missing from values.yaml fails loudly.

What it does not promise: byte-identical output to Helm. toYaml here is
PyYAML's safe_dump with sorted keys, Helm's is sigs.k8s.io/yaml: the same
data, possibly differently quoted. Truthiness, trimming, map ordering and
the functions above follow Go and Sprig.

It also records which values were *used* (printed, tested by if/with/range,
passed to a function other than index/include/dict/list), so a test can
assert that every value in values.yaml reaches some template.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import yaml
from gotemplate_parse import Pipe, _Parser  # noqa: F401 (re-exported: tests parse snippets)
from gotemplate_values import (Int64, TDict, TemplateError, V, VMap, go_printf, go_quote, go_str,  # noqa: F401
                               indent, to_yaml, truthy)


# --------------------------------------------------------------- executor ---

_STRUCTURAL = {"index", "include", "dict", "list"}


class Renderer:
  """Renders a chart directory: Chart.yaml, values.yaml, templates/*."""

  def __init__(self, chart_dir: str):
    self.chart_dir = chart_dir
    with open(os.path.join(chart_dir, "Chart.yaml")) as f:
      self.chart = yaml.safe_load(f)
    with open(os.path.join(chart_dir, "values.yaml")) as f:
      self.default_values = yaml.safe_load(f)
    self.templates: dict[str, list] = {}
    self.defines: dict[str, list] = {}
    tdir = os.path.join(chart_dir, "templates")
    for fn in sorted(os.listdir(tdir)):
      with open(os.path.join(tdir, fn)) as f:
        p = _Parser(f.read(), fn)
      nodes = p.parse()
      for name in p.defines:
        if name in self.defines:
          raise TemplateError(f"{fn}: template {name!r} defined twice")
      self.defines.update(p.defines)
      # Helm renders every file but those starting with "_"; NOTES.txt is
      # printed, not applied.
      if not fn.startswith("_") and fn != "NOTES.txt":
        self.templates[fn] = nodes
    self.used: set[tuple] = set()

  # -- entry point
  def render(self, values: dict, release: str = "tandem", namespace: str = "default") -> dict[str, str]:
    _no_floats(values, ())
    root = {
        "Values": VMap(values, ()),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True, "Revision": 1},
        "Chart": {"Name": self.chart["name"], "Version": self.chart["version"],
                  "AppVersion": self.chart.get("appVersion", "")},
    }
    out = {}
    for fn, nodes in self.templates.items():
      out[fn] = self._exec(nodes, V(root), [{"$": V(root)}])
    return out

  # -- nodes
  def _exec(self, nodes, dot: V, scopes: list) -> str:
    out = []
    for n in nodes:
      kind = n[0]
      if kind == "text":
        out.append(n[1])
      elif kind == "out":
        v = self._pipe(n[1], dot, scopes)
        if not n[1].decl:
          self._use(v)
          out.append(go_str(v.value))
      elif kind == "if":
        for pipe, body in n[1]:
          v = self._pipe(pipe, dot, scopes)
          self._use(v)
          if truthy(v.value):
            out.append(self._exec(body, dot, scopes + [{}]))
            break
        else:
          out.append(self._exec(n[2], dot, scopes + [{}]))
      elif kind == "with":
        scope = {}
        v = self._pipe(n[1], dot, scopes + [scope])
        self._use(v)
        if truthy(v.value):
          out.append(self._exec(n[2], v, scopes + [scope]))
        else:
          out.append(self._exec(n[3], dot, scopes + [{}]))
      elif kind == "range":
        pipe = n[1]
        v = self._eval_cmds(pipe.cmds, dot, scopes)
        self._use(v)
        coll = v.value
        if isinstance(coll, dict):
          items = [(k, V(coll[k], _child(v, k))) for k in sorted(coll)]
        elif isinstance(coll, list):
          items = [(i, V(x, _child(v, i))) for i, x in enumerate(coll)]
        elif coll is None:
          items = []
        else:
          raise TemplateError(f"range over {type(coll).__name__}")
        if not items:
          out.append(self._exec(n[3], dot, scopes + [{}]))
        for key, item in items:
          scope = {}
          if len(pipe.decl) == 1:
            scope[pipe.decl[0]] = item
          elif len(pipe.decl) == 2:
            scope[pipe.decl[0]] = V(key)
            scope[pipe.decl[1]] = item
          out.append(self._exec(n[2], item, scopes + [scope]))
      else:
        raise TemplateError(f"unknown node {kind}")
    return "".join(out)

  def _use(self, v: V):
    if v.path is not None:
      self.used.add(v.path)
    elif isinstance(v.value, VMap):
      self.used.add(v.value.path)

  def _pipe(self, pipe: Pipe, dot: V, scopes: list) -> V:
    v = self._eval_cmds(pipe.cmds, dot, scopes)
    if pipe.decl:
      if len(pipe.decl) != 1:
        raise TemplateError("two variables outside range")
      name = pipe.decl[0]
      if pipe.kind == "decl":
        scopes[-1][name] = v
      else:
        for s in reversed(scopes):
          if name in s:
            s[name] = v
            break
        else:
          raise TemplateError(f"assignment to undeclared {name}")
    return v

  def _eval_cmds(self, cmds, dot, scopes) -> V:
    piped = None
    for cmd in cmds:
      piped = self._cmd(cmd, dot, scopes, piped)
    return piped

  def _cmd(self, cmd, dot, scopes, piped: V | None) -> V:
    head = cmd[0]
    if head[0] == "fn":
      args = [self._operand(o, dot, scopes) for o in cmd[1:]]
      if piped is not None:
        args.append(piped)
      return self._call(head[1], args)
    if len(cmd) != 1 or piped is not None:
      raise TemplateError(f"{head!r} is not a function but has arguments")
    return self._operand(head, dot, scopes)

  def _operand(self, o, dot, scopes) -> V:
    kind = o[0]
    if kind == "lit":
      return V(o[1])
    if kind == "field":
      return self._chain(dot, o[1])
    if kind == "var":
      for s in reversed(scopes):
        if o[1] in s:
          return self._chain(s[o[1]], o[2])
      raise TemplateError(f"undefined variable {o[1]}")
    if kind == "sub":
      return self._eval_cmds(o[1].cmds, dot, scopes)
    if kind == "fn":
      raise TemplateError(f"function {o[1]} used as an argument (parenthesise it)")
    raise TemplateError(f"bad operand {o!r}")

  def _chain(self, v: V, names: list) -> V:
    for name in names:
      m = v.value
      if not isinstance(m, dict):
        raise TemplateError(f"cannot look up .{name} in a {type(m).__name__}")
      if name not in m:
        where = ".".join(map(str, v.path)) if v.path is not None else "the data"
        raise TemplateError(f"no key {name!r} in {where} (every value must be in values.yaml)")
      v = V(m[name], _child(v, name))
      if isinstance(v.value, dict) and v.path is not None and not isinstance(v.value, VMap):
        v = V(VMap(v.value, v.path), v.path)
    return v

  def _call(self, name: str, args: list[V]) -> V:
    if name not in _STRUCTURAL:
      for a in args:
        self._use(a)
    vals = [a.value for a in args]

    def need(n):
      if len(vals) != n:
        raise TemplateError(f"{name} takes {n} arguments, got {len(vals)}")

    if name == "include":
      need(2)
      if vals[0] not in self.defines:
        raise TemplateError(f"include of undefined template {vals[0]!r}")
      return V(self._exec(self.defines[vals[0]], args[1], [{"$": args[1]}]))
    if name == "toYaml":
      need(1)
      return V(to_yaml(vals[0]))
    if name in ("nindent", "indent"):
      need(2)
      s = indent(vals[0], go_str(vals[1]))
      return V("\n" + s if name == "nindent" else s)
    if name == "quote":
      need(1)
      return V(go_quote(go_str(vals[0])))
    if name == "default":
      need(2)
      return args[1] if truthy(vals[1]) else args[0]
    if name == "printf":
      return V(go_printf(vals[0], vals[1:]))
    if name == "list":
      return V(list(vals))
    if name == "dict":
      if len(vals) % 2:
        raise TemplateError("dict needs key/value pairs")
      return V(TDict({vals[i]: vals[i + 1] for i in range(0, len(vals), 2)},
                     {vals[i]: _path_of(args[i + 1]) for i in range(0, len(vals), 2)}))
    if name == "index":
      need(2)
      return self._chain(args[0], [vals[1]])
    if name in ("eq", "ne"):
      need(2)
      a, b = vals
      # Go's eq compares basic values of one kind and refuses mixed kinds.
      if type(a) is not type(b) or not isinstance(a, (str, int, bool)):
        raise TemplateError(f"{name} of {a!r} and {b!r}: not two basic values of one kind")
      return V((a == b) if name == "eq" else (a != b))
    if name == "not":
      need(1)
      return V(not truthy(vals[0]))
    if name == "and":
      for a in args:
        if not truthy(a.value):
          return a
      return args[-1]
    if name == "or":
      for a in args:
        if truthy(a.value):
          return a
      return args[-1]
    if name == "join":
      need(2)
      return V(vals[0].join(go_str(x) for x in vals[1]))
    if name == "sha256sum":
      need(1)
      return V(hashlib.sha256(go_str(vals[0]).encode()).hexdigest())
    if name == "trunc":
      need(2)
      return V(go_str(vals[1])[:vals[0]])
    if name == "trimSuffix":
      need(2)
      s = go_str(vals[1])
      return V(s[:-len(vals[0])] if vals[0] and s.endswith(vals[0]) else s)
    if name == "required":
      need(2)
      if vals[1] is None or vals[1] == "":
        raise TemplateError(f"required: {vals[0]}")
      return args[1]
    if name == "fail":
      need(1)
      raise TemplateError(f"fail: {go_str(vals[0])}")
    if name == "toString":
      need(1)
      return V(go_str(vals[0]))
    if name == "add":
      # Sprig converts anything to int64; only true integers are allowed here.
      if len(vals) < 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
        raise TemplateError(f"add takes two or more integers, got {vals!r}")
      return V(Int64(sum(vals)))
    if name in ("sub", "lt"):
      need(2)
      if not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
        raise TemplateError(f"{name} takes two integers, got {vals!r}")
      return V(Int64(vals[0] - vals[1]) if name == "sub" else vals[0] < vals[1])
    if name == "int64":
      need(1)
      if not isinstance(vals[0], int) or isinstance(vals[0], bool):
        raise TemplateError(f"int64 takes an integer here, got {vals[0]!r}")
      return V(Int64(vals[0]))
    raise TemplateError(f"function {name!r} is outside the subset")


def _path_of(v: V) -> tuple | None:
  if v.path is not None:
    return v.path
  return v.value.path if isinstance(v.value, VMap) else None


def _child(v: V, key) -> tuple | None:
  if isinstance(v.value, TDict):
    return v.value.paths.get(key)
  if v.path is not None:
    return v.path + (key,)
  if isinstance(v.value, VMap):
    return v.value.path + (key,)
  return None


def _no_floats(x: Any, path: tuple):
  if isinstance(x, float):
    raise TemplateError(f"values: {'.'.join(map(str, path))} is a float (use an int or a string)")
  if isinstance(x, dict):
    for k, v in x.items():
      _no_floats(v, path + (k,))
  if isinstance(x, list):
    for i, v in enumerate(x):
      _no_floats(v, path + (i,))


def value_leaves(x: Any, path: tuple = ()) -> list[tuple]:
  """Every leaf path of a values tree (lists and empty maps are leaves)."""
  if isinstance(x, dict) and x:
    out = []
    for k, v in x.items():
      out.extend(value_leaves(v, path + (k,)))
    return out
  return [path]
