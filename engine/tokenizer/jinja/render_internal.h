// Internal to the jinja renderer (not a public API): the Renderer class
// whose statement half is in render.cc and whose expression half is in
// render_expr.cc, and the few declarations both halves share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/lexer.h"
#include "engine/tokenizer/jinja/render.h"
#include "engine/tokenizer/jinja/value.h"

namespace tandem::jinja {

struct MacroClosure {
  std::unordered_map<std::string, Value> variables;
};

namespace render_internal {

[[noreturn]] inline void Fail(std::string message, size_t pos) { throw Error{std::move(message), pos}; }

enum class Flow { kNormal, kBreak, kContinue };

// A Python number: bool and int are integers.
struct Num {
  bool is_int;
  int64_t i;
  double d;
};

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
  // Statements (render.cc).
  void Emit(std::string_view s, size_t pos);
  Flow ExecBody(const Body& body);
  Flow Exec(const Stmt& s);
  void ExecSet(const Stmt& s, Value v);
  void Bind(const Stmt& s, const Json& item, std::unordered_map<std::string, Value>* scope);
  void CountIteration(size_t pos);
  void ExecFor(const Stmt& s);
  Value Lookup(const std::string& name) const;
  Value CallMacro(const Stmt& m, const MacroClosure& closure, const Args& args, size_t pos);

  // Expressions and operators (render_expr.cc).
  Args EvalArgs(const Expr& e);
  Value Eval(const Expr& e);
  static std::string NameOf(const Expr& e);
  Value GetAttr(const Value& obj, const std::string& name, const Expr& obj_expr, size_t pos);
  Value GetItem(const Value& obj, const Value& key, const Expr& obj_expr, size_t pos);
  Value EvalSlice(const Expr& e);
  Value EvalCall(const Expr& e);
  static const Json& Nestable(const Value& v, const std::string& what, size_t pos);
  Value Built(Value v, size_t pos);
  Value EvalBinary(const Expr& e);
  Value EvalBinaryUncharged(const Expr& e);
  Value Repeat(const Json& x, int64_t times, size_t pos);
  static Value Arith(const std::string& op, const Num& a, const Num& b, size_t pos);
  Value EvalCompare(const Expr& e);
  static bool Order(const std::string& op, const Value& l, const Value& r, size_t pos);

  std::shared_ptr<const Json> context_;
  const RenderLimits& limits_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  size_t scope_floor_ = 0;  // lowest scope Lookup searches before scope 0 (a macro call's own scope)
  std::string* out_ = nullptr;
  int64_t iterations_ = 0;
  int macro_depth_ = 0;
  int64_t work_bytes_ = 0;
};

}  // namespace render_internal
}  // namespace tandem::jinja
