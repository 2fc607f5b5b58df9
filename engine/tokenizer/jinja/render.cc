// jinja renderer; see render.h. This half runs statements (text, output,
// if, for, set, macros) and scopes; expressions are in render_expr.cc.
#include "engine/tokenizer/jinja/render.h"

#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/render_internal.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::jinja {
namespace render_internal {

void Renderer::Emit(std::string_view s, size_t pos) {
  if (out_->size() + s.size() > limits_.max_output_bytes) {
    Fail(absl::StrCat("output exceeds ", limits_.max_output_bytes, " bytes"), pos);
  }
  out_->append(s);
}

Flow Renderer::ExecBody(const Body& body) {
  for (const StmtPtr& s : body) {
    const Flow f = Exec(*s);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Flow Renderer::Exec(const Stmt& s) {
  switch (s.kind) {
    case Stmt::Kind::kText:
      Emit(s.text, s.pos);
      return Flow::kNormal;
    case Stmt::Kind::kOutput:
      Emit(ToStr(Eval(*s.expr), s.pos), s.pos);
      return Flow::kNormal;
    case Stmt::Kind::kIf:
      for (size_t i = 0; i < s.conditions.size(); ++i) {
        if (Truthy(Eval(*s.conditions[i]))) return ExecBody(s.bodies[i]);
      }
      if (s.bodies.size() > s.conditions.size()) return ExecBody(s.bodies.back());
      return Flow::kNormal;
    case Stmt::Kind::kFor:
      ExecFor(s);
      return Flow::kNormal;
    case Stmt::Kind::kSet:
      ExecSet(s, Eval(*s.expr));
      return Flow::kNormal;
    case Stmt::Kind::kSetBlock: {
      std::string captured;
      std::string* saved = out_;
      out_ = &captured;
      ExecBody(s.bodies[0]);
      out_ = saved;
      ExecSet(s, Value(Json(std::move(captured))));
      return Flow::kNormal;
    }
    case Stmt::Kind::kBreak:
      return Flow::kBreak;
    case Stmt::Kind::kContinue:
      return Flow::kContinue;
    case Stmt::Kind::kMacro: {
      // A macro defined inside a loop or another macro sees the variables
      // visible there (as they are now); top-level ones are looked up live.
      auto closure = std::make_shared<MacroClosure>();
      for (size_t i = scopes_.size(); i-- > 1;) {
        for (const auto& [key, v] : scopes_[i]) closure->variables.emplace(key, v);
        if (i == scope_floor_) break;
      }
      scopes_.back()[s.targets[0]] = Value::Callable(s.targets[0], &s, std::move(closure));
      return Flow::kNormal;
    }
    case Stmt::Kind::kGeneration: {
      // HF implements the tag as a call block: its `set`s stay inside.
      scopes_.emplace_back();
      const Flow f = ExecBody(s.bodies[0]);
      scopes_.pop_back();
      return f;
    }
  }
  return Flow::kNormal;
}

void Renderer::ExecSet(const Stmt& s, Value v) {
  if (s.attribute.empty()) {
    scopes_.back()[s.targets[0]] = std::move(v);
    return;
  }
  const Value ns = Lookup(s.targets[0]);
  if (!ns.is_namespace()) {
    Fail(absl::StrCat("cannot assign attribute '", s.attribute, "' on '", s.targets[0],
                      "': not a namespace object"),
         s.pos);
  }
  ns.ns()[s.attribute] = DataOf(v, "namespace attribute", s.pos);
}

void Renderer::Bind(const Stmt& s, const Json& item, std::unordered_map<std::string, Value>* scope) {
  if (s.targets.size() == 1) {
    (*scope)[s.targets[0]] = Value(item);
    return;
  }
  if (!item.is_array() || item.size() != s.targets.size()) {
    Fail(absl::StrCat("cannot unpack a ", item.type_name(), " into ", s.targets.size(), " loop variables"), s.pos);
  }
  for (size_t k = 0; k < s.targets.size(); ++k) (*scope)[s.targets[k]] = Value(item[k]);
}

void Renderer::CountIteration(size_t pos) {
  if (++iterations_ > limits_.max_loop_iterations) {
    Fail(absl::StrCat("loop iterations exceed ", limits_.max_loop_iterations), pos);
  }
}

void Renderer::ExecFor(const Stmt& s) {
  const Value seq = Eval(*s.expr);
  Json items = Json::array();
  if (seq.is_undefined()) {
    // jinja2 iterates an undefined value as empty.
  } else {
    const Json& j = DataOf(seq, "for loop", s.pos);
    if (j.is_array()) {
      items = j;
    } else if (j.is_object()) {
      for (auto it = j.begin(); it != j.end(); ++it) items.push_back(it.key());
    } else if (j.is_string()) {
      const std::string& str = j.get_ref<const std::string&>();
      for (size_t i = 0, len = 0; i < str.size(); i += len) {
        len = tokenizer_internal::CharLen(str, i);
        items.push_back(str.substr(i, len));
      }
    } else {
      Fail(absl::StrCat("cannot iterate over a ", j.type_name()), s.pos);
    }
  }
  if (s.filter) {
    Json kept = Json::array();
    for (const Json& item : items) {
      CountIteration(s.pos);
      scopes_.emplace_back();
      Bind(s, item, &scopes_.back());
      const bool keep = Truthy(Eval(*s.filter));
      scopes_.pop_back();
      if (keep) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    CountIteration(s.pos);
    Json loop = {{"index", i + 1},      {"index0", i},         {"revindex", n - i}, {"revindex0", n - i - 1},
                 {"first", i == 0},     {"last", i == n - 1}, {"length", n},       {"depth", 1},
                 {"depth0", 0}};
    if (i > 0) loop["previtem"] = items[i - 1];
    if (i + 1 < n) loop["nextitem"] = items[i + 1];
    scopes_.emplace_back();
    Bind(s, items[i], &scopes_.back());
    scopes_.back()["loop"] = Value(std::move(loop));
    const Flow f = ExecBody(s.bodies[0]);
    scopes_.pop_back();
    if (f == Flow::kBreak) break;
  }
  if (n == 0) ExecBody(s.bodies[1]);
}

// Innermost scope first, down to scope_floor_ (a macro's own scope), then
// the top-level scope, the render's variables and the global functions.
Value Renderer::Lookup(const std::string& name) const {
  for (size_t i = scopes_.size(); i-- > scope_floor_;) {
    auto hit = scopes_[i].find(name);
    if (hit != scopes_[i].end()) return hit->second;
  }
  if (scope_floor_ > 0) {
    auto hit = scopes_[0].find(name);
    if (hit != scopes_[0].end()) return hit->second;
  }
  auto hit = context_->find(name);
  if (hit != context_->end()) return Value::Alias(context_, &*hit);
  if (name == "raise_exception" || name == "namespace" || name == "range" || name == "strftime_now") {
    return Value::Callable(name, nullptr);
  }
  return Value::Undefined(name);
}

Value Renderer::CallMacro(const Stmt& m, const MacroClosure& closure, const Args& args, size_t pos) {
  if (macro_depth_ >= limits_.max_macro_depth) {
    Fail(absl::StrCat("macro calls nest deeper than ", limits_.max_macro_depth), pos);
  }
  const size_t num_params = m.targets.size() - 1;
  if (args.positional.size() > num_params) {
    Fail(absl::StrCat("macro '", m.targets[0], "' takes ", num_params, " arguments"), pos);
  }
  std::unordered_map<std::string, Value> scope;
  for (const auto& [key, v] : args.keyword) {
    bool known = false;
    for (size_t p = 0; p < num_params; ++p) known = known || m.targets[p + 1] == key;
    if (!known) Fail(absl::StrCat("macro '", m.targets[0], "' has no parameter '", key, "'"), pos);
    scope[key] = v;
  }
  for (size_t p = 0; p < args.positional.size(); ++p) {
    if (scope.count(m.targets[p + 1]) != 0) Fail(absl::StrCat("macro argument '", m.targets[p + 1], "' given twice"), pos);
    scope[m.targets[p + 1]] = args.positional[p];
  }
  const size_t saved_floor = scope_floor_;
  scopes_.push_back(closure.variables);
  scope_floor_ = scopes_.size() - 1;
  scopes_.emplace_back();
  for (size_t p = 0; p < num_params; ++p) {
    const std::string& param = m.targets[p + 1];
    if (scope.count(param) == 0) {
      scopes_.back()[param] = m.conditions[p] ? Eval(*m.conditions[p]) : Value::Undefined(param);
    }
  }
  for (auto& [key, v] : scope) scopes_.back()[key] = std::move(v);
  std::string captured;
  std::string* saved_out = out_;
  out_ = &captured;
  ++macro_depth_;
  ExecBody(m.bodies[0]);
  --macro_depth_;
  out_ = saved_out;
  scopes_.pop_back();
  scopes_.pop_back();
  scope_floor_ = saved_floor;
  return Value(Json(std::move(captured)));
}

}  // namespace render_internal

void RenderBody(const Body& body, const Json& context, const RenderLimits& limits, std::string* out) {
  render_internal::Renderer(context, limits).Run(body, out);
}

}  // namespace tandem::jinja
