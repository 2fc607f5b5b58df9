// jinja::Value: what a Jinja expression evaluates to. Data is an immutable
// nlohmann::ordered_json (insertion-ordered, like Python dicts, so `.items()`
// and `tojson` keep the order the caller gave) shared by pointer: indexing
// into a large `messages` list aliases the parent instead of copying it.
// Three further kinds exist only inside templates: Undefined (a missing
// name, key or attribute; renders as "" and is falsy, as jinja2's default
// Undefined), Namespace (the mutable object `namespace()` returns) and
// Callable (a global function such as raise_exception, or a macro).
//
// The Python-facing conversions (str(), repr(), json.dumps as HF's tojson
// calls it) live here so filters and the renderer agree on them.
//
// Thread-safety: a Value is immutable except a Namespace's attributes; one
// render uses its values on one thread.
#pragma once

#include <memory>
#include <string>

#include "nlohmann/json.hpp"

namespace tandem::jinja {

struct MacroClosure;  // render_internal.h: the variables a macro saw where it was defined

using Json = nlohmann::ordered_json;

class Value {
 public:
  enum class Kind { kUndefined, kData, kNamespace, kCallable };

  Value() : kind_(Kind::kUndefined) {}
  explicit Value(Json data) : kind_(Kind::kData), data_(std::make_shared<const Json>(std::move(data))) {}
  // Shares `owner`'s lifetime and points at `part` inside it (no copy).
  static Value Alias(const std::shared_ptr<const Json>& owner, const Json* part) {
    Value v;
    v.kind_ = Kind::kData;
    v.data_ = std::shared_ptr<const Json>(owner, part);
    return v;
  }
  // `name` says what was missing, for the error when it is used.
  static Value Undefined(std::string name) {
    Value v;
    v.undefined_name_ = std::move(name);
    return v;
  }
  // A global function (`macro` null) or a macro (its definition, owned by
  // the template, which outlives the render).
  static Value Callable(std::string name, const void* macro,
                        std::shared_ptr<const MacroClosure> closure = nullptr) {
    Value v;
    v.closure_ = std::move(closure);
    v.kind_ = Kind::kCallable;
    v.undefined_name_ = std::move(name);
    v.macro_ = macro;
    return v;
  }
  static Value NewNamespace(Json attributes) {
    Value v;
    v.kind_ = Kind::kNamespace;
    v.ns_ = std::make_shared<Json>(std::move(attributes));
    return v;
  }

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_data() const { return kind_ == Kind::kData; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  // Precondition: is_callable(). The function's or macro's name, and the
  // macro definition (null for a global function).
  const std::string& callable_name() const { return undefined_name_; }
  const void* macro() const { return macro_; }
  const std::shared_ptr<const MacroClosure>& closure() const { return closure_; }
  // Precondition: is_data().
  const Json& data() const { return *data_; }
  const std::shared_ptr<const Json>& data_ptr() const { return data_; }
  // Precondition: is_namespace(). The namespace's attributes (an object).
  Json& ns() const { return *ns_; }
  const std::string& undefined_name() const { return undefined_name_; }

 private:
  Kind kind_;
  std::shared_ptr<const Json> data_;
  std::shared_ptr<Json> ns_;
  std::string undefined_name_;  // also the callable's name
  const void* macro_ = nullptr;
  std::shared_ptr<const MacroClosure> closure_;
};

// Python's float repr: shortest round-trip digits, ".0" on integral values,
// exponent form below 1e-4 and from 1e16 on.
std::string PyFloatRepr(double d);
// Python's str() / repr() of the JSON value (None, True, 'quoted', [..], {..}).
std::string PyStr(const Json& j);
std::string PyRepr(const Json& j);
// json.dumps(j, ensure_ascii=False, indent=indent) as HF's tojson filter
// calls it; indent < 0 means none (separators ", " and ": ").
std::string PyJsonDumps(const Json& j, int indent);

// Python truthiness.
bool Truthy(const Value& v);

// Values nest at most this deep (arrays/objects), so the recursive printers
// and comparisons above stay far from the stack's end: the render's inputs
// are checked once, and list/dict literals refuse to wrap deeper values.
inline constexpr size_t kMaxValueDepth = 128;

// The nesting depth of `j` (a scalar is 0, [] is 1), counted without
// recursion; stops counting past `limit` and returns limit + 1.
size_t JsonDepth(const Json& j, size_t limit);

// About the memory `j` holds: its strings' and keys' bytes plus 16 per
// value, counted without recursion.
size_t ApproxBytes(const Json& j);

}  // namespace tandem::jinja
