// jinja builtins; see builtins.h. Each filter, test and method mirrors the
// Python behaviour jinja2 gives it (str methods are Python's str methods).
// This file: the value helpers, tests and methods; filters are in
// builtins_filters.cc.
#include "engine/tokenizer/jinja/builtins.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins_internal.h"
#include "engine/tokenizer/utf8.h"
#include "unicode/unistr.h"

namespace tandem::jinja {
namespace builtins_internal {

using tokenizer_internal::DecodeChar;

// Byte offsets of each code point's start, plus s.size() at the end.
std::vector<size_t> CharOffsets(std::string_view s) {
  std::vector<size_t> offsets;
  size_t i = 0;
  while (i < s.size()) {
    offsets.push_back(i);
    i += tokenizer_internal::CharLen(s, i);
  }
  offsets.push_back(s.size());
  return offsets;
}

bool IsPySpace(char32_t cp) { return tokenizer_internal::IsWhitespace(cp) || (cp >= 0x1c && cp <= 0x1f); }

// Python str.strip / lstrip / rstrip; `chars` null means whitespace.
std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<char32_t> set;
  if (chars != nullptr) {
    for (size_t i = 0, len = 0; i < chars->size(); i += len) set.push_back(DecodeChar(*chars, i, &len));
  }
  auto strip_cp = [&](char32_t cp) {
    if (chars == nullptr) return IsPySpace(cp);
    for (char32_t c : set) {
      if (c == cp) return true;
    }
    return false;
  };
  const std::vector<size_t> off = CharOffsets(s);
  size_t b = 0;
  size_t e = off.size() - 1;
  size_t len = 0;
  if (left) {
    while (b < e && strip_cp(DecodeChar(s, off[b], &len))) ++b;
  }
  if (right) {
    while (e > b && strip_cp(DecodeChar(s, off[e - 1], &len))) --e;
  }
  return std::string(s.substr(off[b], off[e] - off[b]));
}

std::string CaseMap(std::string_view s, bool upper) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (upper) {
    u.toUpper();
  } else {
    u.toLower();
  }
  std::string out;
  u.toUTF8String(out);
  return out;
}

// Python str.replace(old, new, count).
std::string PyReplace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between characters and at both ends.
    const std::vector<size_t> off = CharOffsets(s);
    int64_t done = 0;
    for (size_t i = 0; i + 1 < off.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out.append(s, off[i], off[i + 1] - off[i]);
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t at = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(from, at);
    if (hit == std::string::npos) break;
    out.append(s, at, hit - at);
    out += to;
    at = hit + from.size();
    ++done;
  }
  out.append(s, at, std::string::npos);
  return out;
}

// Python str.split(sep, maxsplit).
Json PySplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  Json out = Json::array();
  if (sep == nullptr) {
    const std::vector<size_t> off = CharOffsets(s);
    size_t i = 0;
    size_t len = 0;
    const size_t n = off.size() - 1;
    while (true) {
      while (i < n && IsPySpace(DecodeChar(s, off[i], &len))) ++i;
      if (i >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        // Python keeps the rest, with its trailing whitespace stripped.
        out.push_back(PyStrip(std::string_view(s).substr(off[i]), nullptr, false, true));
        break;
      }
      size_t j = i;
      while (j < n && !IsPySpace(DecodeChar(s, off[j], &len))) ++j;
      out.push_back(s.substr(off[i], off[j] - off[i]));
      i = j;
    }
    return out;
  }
  if (sep->empty()) Fail("split(): empty separator", 0);
  size_t at = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t hit = s.find(*sep, at);
    if (hit == std::string::npos) break;
    out.push_back(s.substr(at, hit - at));
    at = hit + sep->size();
  }
  out.push_back(s.substr(at));
  return out;
}

const std::string& StringArg(const Value* v, const std::string& what, size_t pos) {
  if (v == nullptr || !v->is_data() || !v->data().is_string()) Fail(absl::StrCat(what, " expects a string"), pos);
  return v->data().get_ref<const std::string&>();
}

int64_t IntArg(const Value* v, const std::string& what, size_t pos) {
  if (v == nullptr || !v->is_data() || !(v->data().is_number_integer() || v->data().is_boolean())) {
    Fail(absl::StrCat(what, " expects an integer"), pos);
  }
  return v->data().is_boolean() ? (v->data().get<bool>() ? 1 : 0) : v->data().get<int64_t>();
}

bool IsNumber(const Json& j) { return j.is_number() || j.is_boolean(); }

double AsDouble(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1.0 : 0.0;
  return j.get<double>();
}

}  // namespace builtins_internal

using namespace builtins_internal;  // NOLINT: this file's own helpers

const Value* Args::Get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

void Args::Check(const std::string& what, size_t max_positional, std::initializer_list<std::string_view> names,
                 size_t pos) const {
  if (positional.size() > max_positional) Fail(absl::StrCat("too many arguments to ", what), pos);
  for (const auto& [key, value] : keyword) {
    bool known = false;
    for (std::string_view n : names) known = known || n == key;
    if (!known) Fail(absl::StrCat("unsupported keyword argument '", key, "' to ", what), pos);
  }
}

bool IsKnownTest(const std::string& name) {
  static const char* const kNames[] = {"defined", "undefined", "none", "string", "mapping", "iterable",
                                       "sequence", "number", "integer", "float", "boolean", "true", "false",
                                       "odd", "even", "divisibleby", "eq", "equalto", "==", "sameas", "ne",
                                       "!=", "in", "lower", "upper", "callable"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

size_t CodePointCount(std::string_view s) { return CharOffsets(s).size() - 1; }

std::string ToStr(const Value& v, size_t pos) {
  if (v.is_undefined()) return "";
  if (v.is_namespace()) Fail("cannot print a namespace object", pos);
  if (v.is_callable()) Fail(absl::StrCat("cannot print the function '", v.callable_name(), "'"), pos);
  return PyStr(v.data());
}

const Json& DataOf(const Value& v, const std::string& what, size_t pos) {
  if (v.is_undefined()) {
    Fail(absl::StrCat(what, ": '", v.undefined_name().empty() ? "value" : v.undefined_name(), "' is undefined"), pos);
  }
  if (v.is_namespace()) Fail(absl::StrCat(what, ": not supported on a namespace object"), pos);
  if (v.is_callable()) Fail(absl::StrCat(what, ": not supported on the function '", v.callable_name(), "'"), pos);
  return v.data();
}

bool Equal(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_namespace() || b.is_namespace()) return a.is_namespace() && b.is_namespace() && &a.ns() == &b.ns();
  if (a.is_callable() || b.is_callable()) {
    return a.is_callable() && b.is_callable() && a.callable_name() == b.callable_name() && a.macro() == b.macro();
  }
  const Json& x = a.data();
  const Json& y = b.data();
  if (IsNumber(x) && IsNumber(y)) {
    if ((x.is_number_integer() || x.is_boolean()) && (y.is_number_integer() || y.is_boolean())) {
      const int64_t xi = x.is_boolean() ? x.get<bool>() : x.get<int64_t>();
      const int64_t yi = y.is_boolean() ? y.get<bool>() : y.get<int64_t>();
      return xi == yi;
    }
    return AsDouble(x) == AsDouble(y);
  }
  if (x.type() != y.type()) return false;
  if (x.is_array()) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!Equal(Value(x[i]), Value(y[i]))) return false;
    }
    return true;
  }
  if (x.is_object()) {
    if (x.size() != y.size()) return false;
    for (auto it = x.begin(); it != x.end(); ++it) {
      if (!y.contains(it.key()) || !Equal(Value(it.value()), Value(y[it.key()]))) return false;
    }
    return true;
  }
  return x == y;
}

bool Contains(const Value& haystack, const Value& needle, size_t pos) {
  if (haystack.is_undefined()) return false;
  const Json& h = DataOf(haystack, "'in'", pos);
  if (h.is_string()) {
    if (!needle.is_data() || !needle.data().is_string()) Fail("'in <string>' requires a string on the left", pos);
    return h.get_ref<const std::string&>().find(needle.data().get_ref<const std::string&>()) != std::string::npos;
  }
  if (h.is_array()) {
    for (const Json& e : h) {
      if (Equal(Value(e), needle)) return true;
    }
    return false;
  }
  if (h.is_object()) {
    return needle.is_data() && needle.data().is_string() && h.contains(needle.data().get_ref<const std::string&>());
  }
  Fail("'in': right operand is not a container", pos);
}

bool ApplyTest(const std::string& name, const Value& input, const Args& args, size_t pos) {
  const std::string what = absl::StrCat("test '", name, "'");
  const Json* j = input.is_data() ? &input.data() : nullptr;
  auto no_args = [&] { args.Check(what, 0, {}, pos); };
  if (name == "defined") return no_args(), !input.is_undefined();
  if (name == "callable") return no_args(), input.is_callable();
  if (name == "undefined") return no_args(), input.is_undefined();
  if (name == "none") return no_args(), j != nullptr && j->is_null();
  if (name == "string") return no_args(), j != nullptr && j->is_string();
  if (name == "mapping") return no_args(), j != nullptr && j->is_object();
  if (name == "iterable") {
    no_args();
    return input.is_undefined() || (j != nullptr && (j->is_string() || j->is_array() || j->is_object()));
  }
  if (name == "sequence") return no_args(), j != nullptr && (j->is_string() || j->is_array() || j->is_object());
  if (name == "number") return no_args(), j != nullptr && IsNumber(*j);
  if (name == "integer") return no_args(), j != nullptr && j->is_number_integer();
  if (name == "float") return no_args(), j != nullptr && j->is_number_float();
  if (name == "boolean") return no_args(), j != nullptr && j->is_boolean();
  if (name == "true") return no_args(), j != nullptr && j->is_boolean() && j->get<bool>();
  if (name == "false") return no_args(), j != nullptr && j->is_boolean() && !j->get<bool>();
  if (name == "odd" || name == "even") {
    no_args();
    const int64_t v = IntArg(&input, what, pos);
    return ((v % 2) != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    args.Check(what, 1, {"num"}, pos);
    const int64_t d = IntArg(args.Get(0, "num"), what, pos);
    if (d == 0) Fail("division by zero", pos);
    return IntArg(&input, what, pos) % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") {
    args.Check(what, 1, {}, pos);
    const Value* other = args.Get(0, "");
    if (other == nullptr) Fail(absl::StrCat(what, " needs an argument"), pos);
    if (name == "sameas") {
      // Python `is`: identity; for the singletons None/True/False it is equality of type and value.
      return j != nullptr && other->is_data() && (j->is_null() || j->is_boolean()) && *j == other->data();
    }
    return Equal(input, *other);
  }
  if (name == "ne" || name == "!=") {
    args.Check(what, 1, {}, pos);
    const Value* other = args.Get(0, "");
    if (other == nullptr) Fail(absl::StrCat(what, " needs an argument"), pos);
    return !Equal(input, *other);
  }
  if (name == "in") {
    args.Check(what, 1, {}, pos);
    const Value* other = args.Get(0, "");
    if (other == nullptr) Fail(absl::StrCat(what, " needs an argument"), pos);
    return Contains(*other, input, pos);
  }
  if (name == "lower" || name == "upper") {
    no_args();
    if (j == nullptr || !j->is_string()) return false;
    const std::string& s = j->get_ref<const std::string&>();
    return CaseMap(s, name == "upper") == s && CaseMap(s, name != "upper") != s;
  }
  Fail(absl::StrCat("unsupported test '", name, "'"), pos);
}

Value CallMethod(const Value& object, const std::string& name, const Args& args, size_t pos) {
  const Json& j = DataOf(object, absl::StrCat("method '", name, "'"), pos);
  const std::string what = absl::StrCat("method '", name, "'");
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      args.Check(what, 1, {}, pos);
      const Value* chars = args.Get(0, "");
      const std::string* set = nullptr;
      if (chars != nullptr && !(chars->is_data() && chars->data().is_null())) set = &StringArg(chars, what, pos);
      return Value(Json(PyStrip(s, set, name != "rstrip", name != "lstrip")));
    }
    if (name == "startswith" || name == "endswith") {
      args.Check(what, 1, {}, pos);
      const Value* arg = args.Get(0, "");
      if (arg == nullptr) Fail(absl::StrCat(what, " needs an argument"), pos);
      std::vector<std::string> candidates;
      if (arg->is_data() && arg->data().is_array()) {
        for (const Json& c : arg->data()) {
          if (!c.is_string()) Fail(absl::StrCat(what, " expects strings"), pos);
          candidates.push_back(c.get<std::string>());
        }
      } else {
        candidates.push_back(StringArg(arg, what, pos));
      }
      for (const std::string& c : candidates) {
        if (name == "startswith" ? std::string_view(s).starts_with(c) : std::string_view(s).ends_with(c)) {
          return Value(Json(true));
        }
      }
      return Value(Json(false));
    }
    if (name == "split" || name == "rsplit") {
      args.Check(what, 2, {"sep", "maxsplit"}, pos);
      const Value* sep = args.Get(0, "sep");
      const Value* maxsplit = args.Get(1, "maxsplit");
      const int64_t n = maxsplit != nullptr ? IntArg(maxsplit, what, pos) : -1;
      if (name == "rsplit" && n >= 0) Fail("unsupported: rsplit with maxsplit", pos);
      const std::string* set = nullptr;
      if (sep != nullptr && !(sep->is_data() && sep->data().is_null())) set = &StringArg(sep, what, pos);
      if (set != nullptr && set->empty()) Fail("split(): empty separator", pos);
      return Value(PySplit(s, set, n));
    }
    if (name == "upper" || name == "lower") {
      args.Check(what, 0, {}, pos);
      return Value(Json(CaseMap(s, name == "upper")));
    }
    if (name == "replace") {
      args.Check(what, 3, {}, pos);
      const Value* count = args.Get(2, "");
      return Value(Json(PyReplace(s, StringArg(args.Get(0, ""), what, pos), StringArg(args.Get(1, ""), what, pos),
                                  count != nullptr ? IntArg(count, what, pos) : -1)));
    }
  } else if (j.is_object()) {
    if (name == "items" || name == "keys" || name == "values") {
      args.Check(what, 0, {}, pos);
      Json out = Json::array();
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (name == "items") {
          out.push_back(Json::array({it.key(), it.value()}));
        } else if (name == "keys") {
          out.push_back(it.key());
        } else {
          out.push_back(it.value());
        }
      }
      return Value(std::move(out));
    }
    if (name == "get") {
      args.Check(what, 2, {}, pos);
      const Value* key = args.Get(0, "");
      const Value* dflt = args.Get(1, "");
      if (key == nullptr) Fail("get() needs a key", pos);
      if (key->is_data() && key->data().is_string()) {
        auto it = j.find(key->data().get_ref<const std::string&>());
        if (it != j.end()) return Value::Alias(object.data_ptr(), &*it);
      }
      return dflt != nullptr ? *dflt : Value(Json(nullptr));
    }
  }
  Fail(absl::StrCat("unsupported method '", name, "' on a ", j.type_name()), pos);
}

}  // namespace tandem::jinja
