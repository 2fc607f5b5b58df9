"""gotemplate's lexer and parser: a template's text into actions and
pipelines (see gotemplate.py for the subset)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from gotemplate_values import TemplateError


# ------------------------------------------------------------------ lexer ---

_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.S)

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
  | (?P<num>-?\d+(?![\d.]))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def _tokens(body: str, where: str) -> list[tuple[str, str]]:
  out, pos = [], 0
  while pos < len(body):
    m = _TOKEN.match(body, pos)
    if not m:
      raise TemplateError(f"{where}: cannot read {body[pos:pos + 20]!r} (outside the subset?)")
    pos = m.end()
    if m.lastgroup != "ws":
      out.append((m.lastgroup, m.group()))
  return out


# ----------------------------------------------------------------- parser ---
# Nodes: ("text", s) ("out", pipe) ("if", [(pipe, body)...], else_body)
# ("range", vars, pipe, body, else) ("with", pipe, body, else)
# A pipe is (decl_vars, decl_kind, [commands]); a command is a list of operands;
# an operand is ("lit", v) ("field", names) ("var", name, names) ("fn", name)
# ("sub", pipe).

@dataclass
class Pipe:
  decl: list
  kind: str | None
  cmds: list


class _Parser:
  def __init__(self, source: str, name: str):
    self.name = name
    self.items = self._split(source)
    self.i = 0
    self.defines: dict[str, list] = {}

  def _split(self, src: str) -> list:
    items, pos, trim_next = [], 0, False
    for m in _ACTION.finditer(src):
      text = src[pos:m.start()]
      if trim_next:
        text = text.lstrip(" \t\r\n")
      if m.group(1):
        text = text.rstrip(" \t\r\n")
      if text:
        items.append(("text", text))
      body = m.group(2).strip()
      line = src.count("\n", 0, m.start()) + 1
      if body.startswith("/*"):
        if not body.endswith("*/"):
          raise TemplateError(f"{self.name}:{line}: unterminated comment")
      else:
        items.append(("action", body, f"{self.name}:{line}"))
      trim_next = bool(m.group(3))
      pos = m.end()
    text = src[pos:]
    if trim_next:
      text = text.lstrip(" \t\r\n")
    if text:
      items.append(("text", text))
    if "{{" in "".join(t[1] for t in items if t[0] == "text"):
      raise TemplateError(f"{self.name}: an unterminated or malformed action")
    return items

  def parse(self) -> list:
    body, stop = self._block(top=True)
    if stop is not None:
      raise TemplateError(f"{stop[2]}: unexpected {stop[1]!r}")
    return body

  def _block(self, top=False):
    """Parses until end/else; returns (nodes, the stopping action or None)."""
    nodes = []
    while self.i < len(self.items):
      it = self.items[self.i]
      self.i += 1
      if it[0] == "text":
        nodes.append(("text", it[1]))
        continue
      body, where = it[1], it[2]
      word = body.split(None, 1)[0] if body else ""
      rest = body[len(word):].strip()
      if word in ("end", "else"):
        return nodes, it
      if word == "if":
        nodes.append(self._if(rest, where))
      elif word in ("range", "with"):
        pipe = self._pipe(rest, where, allow_decl=True, two_vars=(word == "range"))
        inner, stop = self._block()
        other = []
        if stop is None:
          raise TemplateError(f"{where}: {word} without end")
        if stop[1] == "else":
          other, stop = self._block()
          if stop is None or stop[1] != "end":
            raise TemplateError(f"{where}: {word} ... else without end")
        nodes.append((word, pipe, inner, other))
      elif word == "define":
        if not top:
          raise TemplateError(f"{where}: define inside a block")
        toks = _tokens(rest, where)
        if len(toks) != 1 or toks[0][0] != "str":
          raise TemplateError(f"{where}: define needs one string name")
        inner, stop = self._block()
        if stop is None or stop[1] != "end":
          raise TemplateError(f"{where}: define without end")
        self.defines[json.loads(toks[0][1])] = inner
      elif word in ("template", "block", "break", "continue"):
        raise TemplateError(f"{where}: '{word}' is outside the subset")
      else:
        nodes.append(("out", self._pipe(body, where, allow_decl=True), where))
    return nodes, None

  def _if(self, cond: str, where: str):
    branches, other = [], []
    pipe = self._pipe(cond, where)
    while True:
      inner, stop = self._block()
      if stop is None:
        raise TemplateError(f"{where}: if without end")
      branches.append((pipe, inner))
      if stop[1] == "end":
        break
      rest = stop[1][len("else"):].strip()
      if rest.startswith("if ") or rest.startswith("if\t"):
        pipe = self._pipe(rest[2:].strip(), stop[2])
        continue
      if rest:
        raise TemplateError(f"{stop[2]}: 'else {rest}' is outside the subset")
      other, stop = self._block()
      if stop is None or stop[1] != "end":
        raise TemplateError(f"{where}: if ... else without end")
      break
    return ("if", branches, other)

  def _pipe(self, text: str, where: str, allow_decl=False, two_vars=False) -> Pipe:
    toks = _tokens(text, where)
    decl, kind, k = [], None, 0
    # $a := ..., $a = ..., or (range) $k, $v := ...
    j = 0
    names = []
    while j < len(toks) and toks[j][0] == "var" and "." not in toks[j][1]:
      names.append(toks[j][1])
      if j + 1 < len(toks) and toks[j + 1][0] == "comma" and two_vars and len(names) == 1:
        j += 2
        continue
      j += 1
      break
    if names and j < len(toks) and toks[j][0] in ("decl", "assign"):
      if not allow_decl:
        raise TemplateError(f"{where}: a declaration is not allowed here")
      decl, kind, k = names, toks[j][0], j + 1
    pipe, k = self._cmds(toks, k, where)
    if k != len(toks):
      raise TemplateError(f"{where}: unexpected {toks[k][1]!r}")
    if not pipe:
      raise TemplateError(f"{where}: empty pipeline")
    return Pipe(decl, kind, pipe)

  def _cmds(self, toks, k, where):
    cmds, cmd = [], []
    while k < len(toks):
      kind, text = toks[k]
      if kind == "rp":
        break
      k += 1
      if kind == "pipe":
        if not cmd:
          raise TemplateError(f"{where}: empty command before |")
        cmds.append(cmd)
        cmd = []
      elif kind == "str":
        cmd.append(("lit", json.loads(text)))
      elif kind == "raw":
        cmd.append(("lit", text[1:-1]))
      elif kind == "num":
        cmd.append(("lit", int(text)))
      elif kind == "ident":
        lits = {"true": True, "false": False, "nil": None}
        cmd.append(("lit", lits[text]) if text in lits else ("fn", text))
      elif kind == "field":
        cmd.append(("field", [] if text == "." else text[1:].split(".")))
      elif kind == "var":
        name, *chain = text.split(".")
        cmd.append(("var", name, chain))
      elif kind == "lp":
        sub, k = self._cmds(toks, k, where)
        if k >= len(toks) or toks[k][0] != "rp":
          raise TemplateError(f"{where}: unclosed (")
        k += 1
        cmd.append(("sub", Pipe([], None, sub)))
      else:
        raise TemplateError(f"{where}: unexpected {text!r}")
    if cmd:
      cmds.append(cmd)
    return cmds, k
