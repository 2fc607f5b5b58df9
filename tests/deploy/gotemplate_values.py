"""gotemplate's values and printing: the error type, the wrappers that carry
a value's path in values.yaml, Go's printing (fmt.Sprint, %q, printf's verbs)
and Sprig's toYaml/indent, as Helm prints them (see gotemplate.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml


class TemplateError(Exception):
  pass


# ----------------------------------------------------------------- values ---

class VMap(dict):
  """A map from values.yaml that knows its path (for the used-values record)."""

  def __init__(self, data: dict, path: tuple):
    super().__init__(data)
    self.path = path


class TDict(dict):
  """A map built by `dict`: remembers where its values came from in .Values,
  so `include "x" (dict "n" .Values.a)` then `.n` still counts as using a."""

  def __init__(self, data: dict, paths: dict):
    super().__init__(data)
    self.paths = paths


def plain(x: Any) -> Any:
  """Strips VMap wrappers (for toYaml and comparisons)."""
  if isinstance(x, dict):
    return {k: plain(v) for k, v in x.items()}
  if isinstance(x, list):
    return [plain(v) for v in x]
  return x


@dataclass
class V:
  """An evaluated value and, where it came from .Values, its path there."""
  value: Any
  path: tuple | None = None


def truthy(x: Any) -> bool:
  # Go's template truth: false, 0, nil, and empty strings/lists/maps are false.
  if x is None or x is False:
    return False
  if isinstance(x, bool):
    return True
  if isinstance(x, (int, str, list, dict)):
    return bool(x) if not isinstance(x, int) else x != 0
  raise TemplateError(f"cannot test the truth of {type(x).__name__}")


class Int64(int):
  """An integer Helm holds as int64 (from int64, add, sub), not as the
  float64 it reads every number of values.yaml into."""


def go_str(x: Any) -> str:
  """fmt.Sprint for the kinds the subset allows."""
  if isinstance(x, bool):
    return "true" if x else "false"
  if isinstance(x, int):
    # Helm prints a values.yaml number as a float64: 1048576 comes out as
    # 1.048576e+06, which no flag parser takes. Only int64 prints right.
    if not isinstance(x, Int64) and abs(x) >= 1000000:
      raise TemplateError(f"{x} is a float64 to Helm and prints as {x:.6e}: convert it with int64")
    return str(x)
  if isinstance(x, str):
    return x
  kind = "map" if isinstance(x, dict) else "list" if isinstance(x, list) else type(x).__name__
  raise TemplateError(f"cannot print a {kind} value: {plain(x)!r}")


def go_quote(s: str) -> str:
  # Go's %q for the strings a manifest holds (ASCII, maybe quotes and
  # backslashes): JSON's escaping agrees with Go's there.
  if any(ord(c) > 126 or (ord(c) < 32 and c not in "\n\t\r") for c in s):
    raise TemplateError(f"quote: non-ASCII or control characters in {s!r}")
  return json.dumps(s)


def go_printf(fmt: str, args: list) -> str:
  out, i, n = [], 0, 0
  while i < len(fmt):
    c = fmt[i]
    if c != "%":
      out.append(c)
      i += 1
      continue
    if i + 1 >= len(fmt):
      raise TemplateError(f"printf: dangling % in {fmt!r}")
    verb = fmt[i + 1]
    i += 2
    if verb == "%":
      out.append("%")
      continue
    if n >= len(args):
      raise TemplateError(f"printf: too few arguments for {fmt!r}")
    a = args[n]
    n += 1
    if verb in "sv":
      out.append(go_str(a))
    elif verb == "d":
      if not isinstance(a, int) or isinstance(a, bool):
        raise TemplateError(f"printf: %d of {a!r}")
      out.append(str(a))
    elif verb == "q":
      out.append(go_quote(go_str(a)))
    else:
      raise TemplateError(f"printf: verb %{verb} is outside the subset")
  if n != len(args):
    raise TemplateError(f"printf: {len(args) - n} extra arguments for {fmt!r}")
  return "".join(out)


def to_yaml(x: Any) -> str:
  x = plain(x)
  if x is None:
    return "null"
  # Helm's toYaml drops the final newline; sigs.k8s.io/yaml sorts keys.
  return yaml.safe_dump(x, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n: int, s: str) -> str:
  # Sprig's indent pads every line, empty ones included.
  pad = " " * n
  return pad + s.replace("\n", "\n" + pad)
