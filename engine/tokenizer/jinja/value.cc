// Python-compatible printing of JSON values; see value.h.
#include "engine/tokenizer/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace tandem::jinja {
namespace {

void AppendHex(std::string* out, const char* prefix, unsigned value, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%s%0*x", prefix, digits, value);
  out->append(buf);
}

void AppendPyStringRepr(const std::string& s, std::string* out) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  out->push_back(quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == static_cast<unsigned char>(quote)) {
      out->push_back('\\');
      out->push_back(quote);
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (c < 0x20 || c == 0x7f) {
      AppendHex(out, "\\x", c, 2);
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back(quote);
}

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default:
        if (c < 0x20) {
          AppendHex(out, "\\u", c, 4);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string NumberStr(const Json& j) {
  if (j.is_number_integer()) return j.dump();
  return PyFloatRepr(j.get<double>());
}

void AppendRepr(const Json& j, std::string* out) {
  if (j.is_string()) {
    AppendPyStringRepr(j.get_ref<const std::string&>(), out);
  } else if (j.is_array()) {
    out->push_back('[');
    bool first = true;
    for (const Json& e : j) {
      if (!first) out->append(", ");
      first = false;
      AppendRepr(e, out);
    }
    out->push_back(']');
  } else if (j.is_object()) {
    out->push_back('{');
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!first) out->append(", ");
      first = false;
      AppendPyStringRepr(it.key(), out);
      out->append(": ");
      AppendRepr(it.value(), out);
    }
    out->push_back('}');
  } else {
    out->append(PyStr(j));
  }
}

void AppendJson(const Json& j, int indent, int level, std::string* out) {
  const auto newline = [&](int lvl) {
    out->push_back('\n');
    out->append(static_cast<size_t>(indent) * lvl, ' ');
  };
  if (j.is_string()) {
    AppendJsonString(j.get_ref<const std::string&>(), out);
  } else if (j.is_array() || j.is_object()) {
    const bool is_array = j.is_array();
    if (j.empty()) {
      out->append(is_array ? "[]" : "{}");
      return;
    }
    out->push_back(is_array ? '[' : '{');
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!first) out->append(indent >= 0 ? "," : ", ");
      first = false;
      if (indent >= 0) newline(level + 1);
      if (!is_array) {
        AppendJsonString(it.key(), out);
        out->append(": ");
      }
      AppendJson(it.value(), indent, level + 1, out);
    }
    if (indent >= 0) newline(level);
    out->push_back(is_array ? ']' : '}');
  } else if (j.is_null()) {
    out->append("null");
  } else if (j.is_boolean()) {
    out->append(j.get<bool>() ? "true" : "false");
  } else if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isnan(d)) {
      out->append("NaN");
    } else if (std::isinf(d)) {
      out->append(d > 0 ? "Infinity" : "-Infinity");
    } else {
      out->append(PyFloatRepr(d));
    }
  } else {
    out->append(j.dump());
  }
}

}  // namespace

std::string PyFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits in scientific form: [-]D[.DDD]e[+-]XX.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exp = std::atoi(sci.c_str() + e + 1);
  if (exp < -4 || exp >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return sign + mant + ebuf;
  }
  std::string out;
  if (exp < 0) {
    out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  } else if (static_cast<int>(digits.size()) <= exp + 1) {
    out = digits + std::string(static_cast<size_t>(exp + 1) - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
  }
  return sign + out;
}

std::string PyStr(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "None";
  if (j.is_boolean()) return j.get<bool>() ? "True" : "False";
  if (j.is_number()) return NumberStr(j);
  std::string out;
  AppendRepr(j, &out);
  return out;
}

std::string PyRepr(const Json& j) {
  std::string out;
  AppendRepr(j, &out);
  return out;
}

std::string PyJsonDumps(const Json& j, int indent) {
  std::string out;
  AppendJson(j, indent, 0, &out);
  return out;
}

size_t JsonDepth(const Json& j, size_t limit) {
  struct Frame {
    const Json* node;
    size_t depth;
  };
  std::vector<Frame> stack = {{&j, 0}};
  size_t deepest = 0;
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    if (!f.node->is_array() && !f.node->is_object()) continue;
    const size_t d = f.depth + 1;
    deepest = std::max(deepest, d);
    if (deepest > limit) return limit + 1;
    for (const Json& child : *f.node) stack.push_back({&child, d});
  }
  return deepest;
}

size_t ApproxBytes(const Json& j) {
  size_t total = 0;
  std::vector<const Json*> stack = {&j};
  while (!stack.empty()) {
    const Json* node = stack.back();
    stack.pop_back();
    total += 16;
    if (node->is_string()) {
      total += node->get_ref<const std::string&>().size();
    } else if (node->is_object()) {
      for (auto it = node->begin(); it != node->end(); ++it) {
        total += it.key().size();
        stack.push_back(&it.value());
      }
    } else if (node->is_array()) {
      for (const Json& child : *node) stack.push_back(&child);
    }
  }
  return total;
}

bool Truthy(const Value& v) {
  if (v.is_undefined()) return false;
  if (v.is_namespace() || v.is_callable()) return true;
  const Json& j = v.data();
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_integer()) return j.get<int64_t>() != 0;
  if (j.is_number_float()) return j.get<double>() != 0.0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  if (j.is_array() || j.is_object()) return !j.empty();
  return true;
}

}  // namespace tandem::jinja
