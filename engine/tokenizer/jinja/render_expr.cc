// jinja renderer, expression half: evaluates expressions (names, attributes,
// subscripts, slices, calls, global functions) and applies the operators.
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/render_internal.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::jinja::render_internal {
namespace {

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

}  // namespace

Args Renderer::EvalArgs(const Expr& e) {
  Args args;
  for (const ExprPtr& a : e.args) args.positional.push_back(Eval(*a));
  for (const auto& [key, a] : e.kwargs) args.keyword.emplace_back(key, Eval(*a));
  return args;
}

Value Renderer::Eval(const Expr& e) {
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

std::string Renderer::NameOf(const Expr& e) {
  if (e.kind == Expr::Kind::kName) return e.name;
  if (e.kind == Expr::Kind::kAttr) return absl::StrCat(NameOf(*e.items[0]), ".", e.name);
  if (e.kind == Expr::Kind::kSubscript) {
    const Expr& key = *e.items[1];
    const std::string k = key.kind == Expr::Kind::kLiteral ? PyRepr(key.literal) : "...";
    return absl::StrCat(NameOf(*e.items[0]), "[", k, "]");
  }
  return "value";
}

Value Renderer::GetAttr(const Value& obj, const std::string& name, const Expr& obj_expr, size_t pos) {
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

Value Renderer::GetItem(const Value& obj, const Value& key, const Expr& obj_expr, size_t pos) {
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

Value Renderer::EvalSlice(const Expr& e) {
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

Value Renderer::EvalCall(const Expr& e) {
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
const Json& Renderer::Nestable(const Value& v, const std::string& what, size_t pos) {
  const Json& j = DataOf(v, what, pos);
  if (JsonDepth(j, kMaxValueDepth) >= kMaxValueDepth) {
    Fail(absl::StrCat("value nests deeper than ", kMaxValueDepth, " levels"), pos);
  }
  return j;
}

// Charges a value an operator, filter or method built to the work budget.
Value Renderer::Built(Value v, size_t pos) {
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

Value Renderer::EvalBinary(const Expr& e) {
  const Value v = EvalBinaryUncharged(e);
  if (e.name == "and" || e.name == "or") return v;
  return Built(v, e.pos);
}

Value Renderer::EvalBinaryUncharged(const Expr& e) {
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

Value Renderer::Repeat(const Json& x, int64_t times, size_t pos) {
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

Value Renderer::Arith(const std::string& op, const Num& a, const Num& b, size_t pos) {
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

Value Renderer::EvalCompare(const Expr& e) {
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

bool Renderer::Order(const std::string& op, const Value& l, const Value& r, size_t pos) {
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

}  // namespace tandem::jinja::render_internal
