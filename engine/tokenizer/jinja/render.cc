// jinja renderer; see render.h.
#include "engine/tokenizer/jinja/render.h"

#include <cmath>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::jinja {
namespace {

[[noreturn]] void Fail(std::string message, size_t pos) { throw Error{std::move(message), pos}; }

}  // namespace

struct MacroClosure {
  std::unordered_map<std::string, Value> variables;
};

namespace {

enum class Flow { kNormal, kBreak, kContinue };

// A Python number: bool and int are integers.
struct Num {
  bool is_int;
  int64_t i;
  double d;
};

bool AsNum(const Value& v, Num* n) {
  if (!v.is_data()) return false;
  const Json& j = v.data();
  if (j.is_boolean()) {
    *n = {true, j.get<bool>() ? 1 : 0, 0};
  } else if (j.is_number_integer()) {
    *n = {true, j.get<int64_t>(), 0};
  } else if (j.is_number_float()) {
    *n = {false, 0, j.get<double>()};
  } else {
    return false;
  }
  return true;
}

double D(const Num& n) { return n.is_int ? static_cast<double>(n.i) : n.d; }

// Python slice bounds for a sequence of `len` items.
std::vector<int64_t> SliceIndices(int64_t len, const Value* start, const Value* stop, const Value* step, size_t pos) {
  auto get = [&](const Value* v, int64_t* out) {
    if (v == nullptr || (v->is_data() && v->data().is_null())) return false;
    Num n;
    if (!AsNum(*v, &n) || !n.is_int) Fail("slice indices must be integers", pos);
    *out = n.i;
    return true;
  };
  int64_t st = 1;
  get(step, &st);
  if (st == 0) Fail("slice step cannot be zero", pos);
  int64_t b = 0;
  int64_t e = 0;
  const bool has_b = get(start, &b);
  const bool has_e = get(stop, &e);
  auto clamp = [&](int64_t x, int64_t lo, int64_t hi) {
    if (x < 0) x += len;
    return std::max(lo, std::min(hi, x));
  };
  if (st > 0) {
    b = has_b ? clamp(b, 0, len) : 0;
    e = has_e ? clamp(e, 0, len) : len;
  } else {
    b = has_b ? clamp(b, -1, len - 1) : len - 1;
    e = has_e ? clamp(e, -1, len - 1) : -1;
  }
  std::vector<int64_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(i);
  return out;
}

class Renderer {
 public:
  Renderer(const Json& context, const RenderLimits& limits) : context_(std::make_shared<const Json>(context)), limits_(limits) {
    scopes_.emplace_back();
  }

  void Run(const Body& body, std::string* out) {
    out_ = out;
    ExecBody(body);
  }

 private:
  void Emit(std::string_view s, size_t pos) {
    if (out_->size() + s.size() > limits_.max_output_bytes) {
      Fail(absl::StrCat("output exceeds ", limits_.max_output_bytes, " bytes"), pos);
    }
    out_->append(s);
  }

  Flow ExecBody(const Body& body) {
    for (const StmtPtr& s : body) {
      const Flow f = Exec(*s);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow Exec(const Stmt& s) {
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

  void ExecSet(const Stmt& s, Value v) {
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

  void Bind(const Stmt& s, const Json& item, std::unordered_map<std::string, Value>* scope) {
    if (s.targets.size() == 1) {
      (*scope)[s.targets[0]] = Value(item);
      return;
    }
    if (!item.is_array() || item.size() != s.targets.size()) {
      Fail(absl::StrCat("cannot unpack a ", item.type_name(), " into ", s.targets.size(), " loop variables"), s.pos);
    }
    for (size_t k = 0; k < s.targets.size(); ++k) (*scope)[s.targets[k]] = Value(item[k]);
  }

  void CountIteration(size_t pos) {
    if (++iterations_ > limits_.max_loop_iterations) {
      Fail(absl::StrCat("loop iterations exceed ", limits_.max_loop_iterations), pos);
    }
  }

  void ExecFor(const Stmt& s) {
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
  Value Lookup(const std::string& name) const {
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

  Value CallMacro(const Stmt& m, const MacroClosure& closure, const Args& args, size_t pos) {
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

  Args EvalArgs(const Expr& e) {
    Args args;
    for (const ExprPtr& a : e.args) args.positional.push_back(Eval(*a));
    for (const auto& [key, a] : e.kwargs) args.keyword.emplace_back(key, Eval(*a));
    return args;
  }

  Value Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return Value(e.literal);
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        Json out = Json::array();
        for (const ExprPtr& item : e.items) out.push_back(Nestable(Eval(*item), "list item", item->pos));
        return Value(std::move(out));
      }
      case Expr::Kind::kDict: {
        Json out = Json::object();
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          const Value k = Eval(*e.items[i]);
          if (!k.is_data() || !k.data().is_string()) Fail("dict keys must be strings", e.items[i]->pos);
          out[k.data().get<std::string>()] = Nestable(Eval(*e.items[i + 1]), "dict value", e.items[i + 1]->pos);
        }
        return Value(std::move(out));
      }
      case Expr::Kind::kAttr:
        return GetAttr(Eval(*e.items[0]), e.name, *e.items[0], e.pos);
      case Expr::Kind::kSubscript:
        return GetItem(Eval(*e.items[0]), Eval(*e.items[1]), *e.items[0], e.pos);
      case Expr::Kind::kSlice:
        return EvalSlice(e);
      case Expr::Kind::kCall:
        return EvalCall(e);
      case Expr::Kind::kFilter:
        return Built(ApplyFilter(e.name, Eval(*e.items[0]), EvalArgs(e), e.pos), e.pos);
      case Expr::Kind::kTest: {
        const bool r = ApplyTest(e.name, Eval(*e.items[0]), EvalArgs(e), e.pos);
        return Value(Json(r != e.negated));
      }
      case Expr::Kind::kUnary: {
        const Value v = Eval(*e.items[0]);
        if (e.name == "not") return Value(Json(!Truthy(v)));
        Num n;
        if (!AsNum(v, &n)) Fail(absl::StrCat("bad operand for unary '", e.name, "'"), e.pos);
        if (e.name == "+") return n.is_int ? Value(Json(n.i)) : Value(Json(n.d));
        if (n.is_int) {
          if (n.i == INT64_MIN) Fail("integer overflow", e.pos);
          return Value(Json(-n.i));
        }
        return Value(Json(-n.d));
      }
      case Expr::Kind::kBinary:
        return EvalBinary(e);
      case Expr::Kind::kCompare:
        return EvalCompare(e);
      case Expr::Kind::kCond:
        if (Truthy(Eval(*e.items[0]))) return Eval(*e.items[1]);
        if (e.items[2]) return Eval(*e.items[2]);
        return Value::Undefined("conditional expression without else");
    }
    Fail("unknown expression", e.pos);
  }

  static std::string NameOf(const Expr& e) {
    if (e.kind == Expr::Kind::kName) return e.name;
    if (e.kind == Expr::Kind::kAttr) return absl::StrCat(NameOf(*e.items[0]), ".", e.name);
    if (e.kind == Expr::Kind::kSubscript) {
      const Expr& key = *e.items[1];
      const std::string k = key.kind == Expr::Kind::kLiteral ? PyRepr(key.literal) : "...";
      return absl::StrCat(NameOf(*e.items[0]), "[", k, "]");
    }
    return "value";
  }

  Value GetAttr(const Value& obj, const std::string& name, const Expr& obj_expr, size_t pos) {
    if (obj.is_undefined()) Fail(absl::StrCat("'", NameOf(obj_expr), "' is undefined"), pos);
    if (obj.is_namespace()) {
      auto it = obj.ns().find(name);
      if (it == obj.ns().end()) return Value::Undefined(name);
      return Value(*it);
    }
    const Json& j = obj.data();
    if (j.is_object()) {
      auto it = j.find(name);
      if (it != j.end()) return Value::Alias(obj.data_ptr(), &*it);
    }
    return Value::Undefined(absl::StrCat(NameOf(obj_expr), ".", name));
  }

  Value GetItem(const Value& obj, const Value& key, const Expr& obj_expr, size_t pos) {
    if (obj.is_undefined()) Fail(absl::StrCat("'", NameOf(obj_expr), "' is undefined"), pos);
    if (obj.is_namespace()) {
      if (key.is_data() && key.data().is_string()) return GetAttr(obj, key.data().get<std::string>(), obj_expr, pos);
      return Value::Undefined("namespace item");
    }
    const Json& j = obj.data();
    if (j.is_object()) {
      if (key.is_data() && key.data().is_string()) {
        auto it = j.find(key.data().get_ref<const std::string&>());
        if (it != j.end()) return Value::Alias(obj.data_ptr(), &*it);
      }
      return Value::Undefined(absl::StrCat(NameOf(obj_expr), "[...]"));
    }
    Num n;
    if ((j.is_array() || j.is_string()) && AsNum(key, &n) && n.is_int) {
      if (j.is_array()) {
        int64_t i = n.i < 0 ? n.i + static_cast<int64_t>(j.size()) : n.i;
        if (i < 0 || i >= static_cast<int64_t>(j.size())) return Value::Undefined("index out of range");
        return Value::Alias(obj.data_ptr(), &j[static_cast<size_t>(i)]);
      }
      const std::string& s = j.get_ref<const std::string&>();
      std::vector<size_t> off;
      for (size_t i = 0; i < s.size(); i += tokenizer_internal::CharLen(s, i)) off.push_back(i);
      off.push_back(s.size());
      const int64_t len = static_cast<int64_t>(off.size()) - 1;
      const int64_t i = n.i < 0 ? n.i + len : n.i;
      if (i < 0 || i >= len) return Value::Undefined("index out of range");
      return Value(Json(s.substr(off[i], off[i + 1] - off[i])));
    }
    return Value::Undefined("item");
  }

  Value EvalSlice(const Expr& e) {
    const Value obj = Eval(*e.items[0]);
    Value parts[3];
    const Value* ptrs[3] = {nullptr, nullptr, nullptr};
    for (int k = 0; k < 3; ++k) {
      if (e.items[k + 1]) {
        parts[k] = Eval(*e.items[k + 1]);
        ptrs[k] = &parts[k];
      }
    }
    const Json& j = DataOf(obj, "slice", e.pos);
    if (j.is_array()) {
      Json out = Json::array();
      for (int64_t i : SliceIndices(static_cast<int64_t>(j.size()), ptrs[0], ptrs[1], ptrs[2], e.pos)) {
        out.push_back(j[static_cast<size_t>(i)]);
      }
      return Value(std::move(out));
    }
    if (j.is_string()) {
      const std::string& s = j.get_ref<const std::string&>();
      std::vector<size_t> off;
      for (size_t i = 0; i < s.size(); i += tokenizer_internal::CharLen(s, i)) off.push_back(i);
      off.push_back(s.size());
      std::string out;
      for (int64_t i : SliceIndices(static_cast<int64_t>(off.size()) - 1, ptrs[0], ptrs[1], ptrs[2], e.pos)) {
        out.append(s, off[i], off[i + 1] - off[i]);
      }
      return Value(Json(std::move(out)));
    }
    Fail(absl::StrCat("cannot slice a ", j.type_name()), e.pos);
  }

  Value EvalCall(const Expr& e) {
    const Expr& callee = *e.items[0];
    if (callee.kind == Expr::Kind::kAttr) {
      const Value obj = Eval(*callee.items[0]);
      if (obj.is_undefined()) Fail(absl::StrCat("'", NameOf(*callee.items[0]), "' is undefined"), callee.pos);
      return Built(CallMethod(obj, callee.name, EvalArgs(e), callee.pos), callee.pos);
    }
    if (callee.kind != Expr::Kind::kName) Fail("unsupported call expression", e.pos);
    const Value fn = Lookup(callee.name);
    if (fn.is_undefined()) Fail(absl::StrCat("unsupported function '", callee.name, "' (not defined)"), callee.pos);
    if (!fn.is_callable()) Fail(absl::StrCat("'", callee.name, "' is not callable"), callee.pos);
    const Args args = EvalArgs(e);
    if (fn.macro() != nullptr) return CallMacro(*static_cast<const Stmt*>(fn.macro()), *fn.closure(), args, e.pos);
    const std::string& name = fn.callable_name();
    if (name == "raise_exception") {
      args.Check("raise_exception", 1, {}, e.pos);
      const Value* msg = args.Get(0, "");
      throw TemplateRaised{msg != nullptr ? ToStr(*msg, e.pos) : ""};
    }
    if (name == "namespace") {
      Json attrs = Json::object();
      if (!args.positional.empty()) Fail("namespace() takes keyword arguments only", e.pos);
      for (const auto& [key, v] : args.keyword) attrs[key] = DataOf(v, "namespace()", e.pos);
      return Value::NewNamespace(std::move(attrs));
    }
    if (name == "range") {
      args.Check("range", 3, {}, e.pos);
      int64_t b = 0, end = 0, step = 1;
      auto num = [&](size_t i) {
        Num n;
        if (!AsNum(args.positional[i], &n) || !n.is_int) Fail("range() expects integers", e.pos);
        return n.i;
      };
      if (args.positional.size() == 1) {
        end = num(0);
      } else if (args.positional.size() >= 2) {
        b = num(0);
        end = num(1);
        if (args.positional.size() == 3) step = num(2);
      } else {
        Fail("range() needs an argument", e.pos);
      }
      if (step == 0) Fail("range() step must not be zero", e.pos);
      Json out = Json::array();
      for (int64_t i = b; step > 0 ? i < end : i > end; i += step) {
        if (static_cast<int64_t>(out.size()) >= limits_.max_loop_iterations) Fail("range() too large", e.pos);
        out.push_back(i);
      }
      return Value(std::move(out));
    }
    if (name == "strftime_now") {
      args.Check("strftime_now", 1, {}, e.pos);
      const Value* fmt = args.Get(0, "");
      if (fmt == nullptr || !fmt->is_data() || !fmt->data().is_string()) Fail("strftime_now() expects a format string", e.pos);
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[512];
      const size_t n = std::strftime(buf, sizeof(buf), fmt->data().get_ref<const std::string&>().c_str(), &local);
      return Value(Json(std::string(buf, n)));
    }
    Fail(absl::StrCat("unsupported function '", name, "'"), callee.pos);
  }

  // The data of `v` for a list item or dict value: at most kMaxValueDepth - 1 deep.
  static const Json& Nestable(const Value& v, const std::string& what, size_t pos) {
    const Json& j = DataOf(v, what, pos);
    if (JsonDepth(j, kMaxValueDepth) >= kMaxValueDepth) {
      Fail(absl::StrCat("value nests deeper than ", kMaxValueDepth, " levels"), pos);
    }
    return j;
  }

  // Charges a value an operator, filter or method built to the work budget.
  Value Built(Value v, size_t pos) {
    if (!v.is_data()) return v;
    const Json& j = v.data();
    size_t size = 0;
    if (j.is_string()) {
      size = j.get_ref<const std::string&>().size();
    } else if (j.is_array() || j.is_object()) {
      size = ApproxBytes(j);
    }
    if (size > limits_.max_output_bytes) Fail(absl::StrCat("value exceeds ", limits_.max_output_bytes, " bytes"), pos);
    work_bytes_ += static_cast<int64_t>(size);
    if (work_bytes_ > limits_.max_work_bytes) {
      Fail(absl::StrCat("values built exceed ", limits_.max_work_bytes, " bytes"), pos);
    }
    return v;
  }

  Value EvalBinary(const Expr& e) {
    const Value v = EvalBinaryUncharged(e);
    if (e.name == "and" || e.name == "or") return v;
    return Built(v, e.pos);
  }

  Value EvalBinaryUncharged(const Expr& e) {
    const std::string& op = e.name;
    const Value l = Eval(*e.items[0]);
    if (op == "and") return Truthy(l) ? Eval(*e.items[1]) : l;
    if (op == "or") return Truthy(l) ? l : Eval(*e.items[1]);
    const Value r = Eval(*e.items[1]);
    if (op == "~") return Value(Json(ToStr(l, e.pos) + ToStr(r, e.pos)));
    Num a, b;
    if (AsNum(l, &a) && AsNum(r, &b)) return Arith(op, a, b, e.pos);
    if (l.is_data() && r.is_data()) {
      const Json& x = l.data();
      const Json& y = r.data();
      if (op == "+" && x.is_string() && y.is_string()) {
        return Value(Json(x.get_ref<const std::string&>() + y.get_ref<const std::string&>()));
      }
      if (op == "+" && x.is_array() && y.is_array()) {
        if (ApproxBytes(x) + ApproxBytes(y) > limits_.max_output_bytes) {
          Fail(absl::StrCat("value exceeds ", limits_.max_output_bytes, " bytes"), e.pos);
        }
        Json out = x;
        for (const Json& v : y) out.push_back(v);
        return Value(std::move(out));
      }
      if (op == "*" && (x.is_string() || x.is_array()) && AsNum(r, &b) && b.is_int) return Repeat(x, b.i, e.pos);
      if (op == "*" && (y.is_string() || y.is_array()) && AsNum(l, &a) && a.is_int) return Repeat(y, a.i, e.pos);
      if (op == "%" && x.is_string()) Fail("unsupported operator: string formatting with '%'", e.pos);
    }
    Fail(absl::StrCat("unsupported operand types for '", op, "'"), e.pos);
  }

  Value Repeat(const Json& x, int64_t times, size_t pos) {
    const size_t unit = x.is_string() ? x.get_ref<const std::string&>().size() : ApproxBytes(x);
    if (times > 0 && unit > 0 && static_cast<uint64_t>(times) * unit > limits_.max_output_bytes) {
      Fail("repetition result too large", pos);
    }
    if (x.is_string()) {
      std::string out;
      for (int64_t i = 0; i < times; ++i) out += x.get_ref<const std::string&>();
      return Value(Json(std::move(out)));
    }
    Json out = Json::array();
    for (int64_t i = 0; i < times; ++i) {
      for (const Json& v : x) out.push_back(v);
    }
    return Value(std::move(out));
  }

  static Value Arith(const std::string& op, const Num& a, const Num& b, size_t pos) {
    if (op == "/") {
      if (D(b) == 0) Fail("division by zero", pos);
      return Value(Json(D(a) / D(b)));
    }
    if (a.is_int && b.is_int) {
      int64_t r = 0;
      bool overflow = false;
      if (op == "+") {
        overflow = __builtin_add_overflow(a.i, b.i, &r);
      } else if (op == "-") {
        overflow = __builtin_sub_overflow(a.i, b.i, &r);
      } else if (op == "*") {
        overflow = __builtin_mul_overflow(a.i, b.i, &r);
      } else if (op == "//" || op == "%") {
        if (b.i == 0) Fail("division by zero", pos);
        if (a.i == INT64_MIN && b.i == -1) Fail("integer overflow", pos);
        int64_t q = a.i / b.i;
        int64_t m = a.i % b.i;
        if (m != 0 && ((m < 0) != (b.i < 0))) {
          --q;
          m += b.i;
        }
        r = op == "//" ? q : m;
      }
      if (overflow) Fail("integer overflow", pos);
      return Value(Json(r));
    }
    const double x = D(a);
    const double y = D(b);
    if (op == "+") return Value(Json(x + y));
    if (op == "-") return Value(Json(x - y));
    if (op == "*") return Value(Json(x * y));
    if (y == 0) Fail("division by zero", pos);
    const double q = std::floor(x / y);
    if (op == "//") return Value(Json(q));
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value(Json(m));
  }

  Value EvalCompare(const Expr& e) {
    Value left = Eval(*e.items[0]);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = Eval(*e.items[i + 1]);
      const std::string& op = e.ops[i];
      bool ok;
      if (op == "==") {
        ok = Equal(left, right);
      } else if (op == "!=") {
        ok = !Equal(left, right);
      } else if (op == "in") {
        ok = Contains(right, left, e.pos);
      } else if (op == "not in") {
        ok = !Contains(right, left, e.pos);
      } else {
        ok = Order(op, left, right, e.pos);
      }
      if (!ok) return Value(Json(false));
      left = std::move(right);
    }
    return Value(Json(true));
  }

  static bool Order(const std::string& op, const Value& l, const Value& r, size_t pos) {
    int c;
    Num a, b;
    if (AsNum(l, &a) && AsNum(r, &b)) {
      if (a.is_int && b.is_int) {
        c = a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
      } else {
        c = D(a) < D(b) ? -1 : (D(a) > D(b) ? 1 : 0);
      }
    } else if (l.is_data() && r.is_data() && l.data().is_string() && r.data().is_string()) {
      c = l.data().get_ref<const std::string&>().compare(r.data().get_ref<const std::string&>());
    } else {
      Fail(absl::StrCat("unsupported operand types for '", op, "'"), pos);
    }
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  std::shared_ptr<const Json> context_;
  const RenderLimits& limits_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  size_t scope_floor_ = 0;  // lowest scope Lookup searches before scope 0 (a macro call's own scope)
  std::string* out_ = nullptr;
  int64_t iterations_ = 0;
  int macro_depth_ = 0;
  int64_t work_bytes_ = 0;
};

}  // namespace

void RenderBody(const Body& body, const Json& context, const RenderLimits& limits, std::string* out) {
  Renderer(context, limits).Run(body, out);
}

}  // namespace tandem::jinja
