// jinja parser, expression half: jinja2's operator precedence, postfix
// (.attr, [i], slices, calls), filters and tests.
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/parser_internal.h"

namespace tandem::jinja::parser_internal {

// `a, b` at the top of an output, condition or set is a tuple, as in jinja2.
ExprPtr Parser::ParseTupleOrExpr() {
  const size_t pos = Peek().pos;
  ExprPtr first = ParseExpression(true);
  if (!IsOp(",")) return first;
  ExprPtr tuple = Make(Expr::Kind::kTuple, pos);
  tuple->items.push_back(std::move(first));
  while (IsOp(",")) {
    Next();
    if (Peek().kind == TokenKind::kBlockEnd || Peek().kind == TokenKind::kVarEnd) break;
    tuple->items.push_back(ParseExpression(true));
  }
  return tuple;
}

ExprPtr Parser::ParseExpression(bool allow_cond) {
  DepthGuard guard(this, Peek().pos);
  ExprPtr e = ParseOr();
  if (allow_cond && IsName("if")) {
    ExprPtr cond = Make(Expr::Kind::kCond, Next().pos);
    cond->items.push_back(ParseOr());
    cond->items.push_back(std::move(e));
    if (IsName("else")) {
      Next();
      cond->items.push_back(ParseExpression(true));
    } else {
      cond->items.push_back(nullptr);
    }
    return cond;
  }
  return e;
}

ExprPtr Parser::Binary(std::string op, size_t pos, ExprPtr l, ExprPtr r) {
  ExprPtr e = Make(Expr::Kind::kBinary, pos);
  e->name = std::move(op);
  e->items.push_back(std::move(l));
  e->items.push_back(std::move(r));
  return e;
}

ExprPtr Parser::ParseOr() {
  ExprPtr l = ParseAnd();
  while (IsName("or")) {
    const size_t pos = Next().pos;
    l = Binary("or", pos, std::move(l), ParseAnd());
  }
  return l;
}

ExprPtr Parser::ParseAnd() {
  ExprPtr l = ParseNot();
  while (IsName("and")) {
    const size_t pos = Next().pos;
    l = Binary("and", pos, std::move(l), ParseNot());
  }
  return l;
}

ExprPtr Parser::ParseNot() {
  if (IsName("not")) {
    DepthGuard guard(this, Peek().pos);
    ExprPtr e = Make(Expr::Kind::kUnary, Next().pos);
    e->name = "not";
    e->items.push_back(ParseNot());
    return e;
  }
  return ParseCompare();
}

ExprPtr Parser::ParseCompare() {
  const size_t pos = Peek().pos;
  ExprPtr first = ParseMath1();
  ExprPtr cmp;
  while (true) {
    std::string op;
    if (Peek().kind == TokenKind::kOp &&
        (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == "<=" ||
         Peek().text == ">" || Peek().text == ">=")) {
      op = Next().text;
    } else if (IsName("in")) {
      Next();
      op = "in";
    } else if (IsName("not") && IsName("in", 1)) {
      Next();
      Next();
      op = "not in";
    } else {
      break;
    }
    if (!cmp) {
      cmp = Make(Expr::Kind::kCompare, pos);
      cmp->items.push_back(std::move(first));
    }
    cmp->ops.push_back(op);
    cmp->items.push_back(ParseMath1());
  }
  return cmp ? std::move(cmp) : std::move(first);
}

ExprPtr Parser::ParseMath1() {
  ExprPtr l = ParseConcat();
  while (IsOp("+") || IsOp("-")) {
    const Token& t = Next();
    l = Binary(t.text, t.pos, std::move(l), ParseConcat());
  }
  return l;
}

ExprPtr Parser::ParseConcat() {
  ExprPtr l = ParseMath2();
  while (IsOp("~")) {
    const size_t pos = Next().pos;
    l = Binary("~", pos, std::move(l), ParseMath2());
  }
  return l;
}

ExprPtr Parser::ParseMath2() {
  ExprPtr l = ParsePow();
  while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
    const Token& t = Next();
    l = Binary(t.text, t.pos, std::move(l), ParsePow());
  }
  return l;
}

ExprPtr Parser::ParsePow() {
  ExprPtr l = ParseUnary(true);
  if (IsOp("**")) throw Error{"unsupported operator '**'", Peek().pos};
  return l;
}

ExprPtr Parser::ParseUnary(bool with_filter) {
  DepthGuard guard(this, Peek().pos);
  ExprPtr e;
  if (IsOp("-") || IsOp("+")) {
    const Token& t = Next();
    e = Make(Expr::Kind::kUnary, t.pos);
    e->name = t.text;
    e->items.push_back(ParseUnary(false));
  } else {
    e = ParsePrimary();
  }
  e = ParsePostfix(std::move(e));
  if (with_filter) e = ParseFilterExpr(std::move(e));
  return e;
}

ExprPtr Parser::ParsePrimary() {
  const Token& t = Peek();
  switch (t.kind) {
    case TokenKind::kName: {
      Next();
      ExprPtr e = Make(Expr::Kind::kLiteral, t.pos);
      if (t.text == "true" || t.text == "True") {
        e->literal = true;
      } else if (t.text == "false" || t.text == "False") {
        e->literal = false;
      } else if (t.text == "none" || t.text == "None") {
        e->literal = nullptr;
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      return e;
    }
    case TokenKind::kString: {
      ExprPtr e = Make(Expr::Kind::kLiteral, t.pos);
      std::string s;
      while (Peek().kind == TokenKind::kString) s += Next().text;
      e->literal = std::move(s);
      return e;
    }
    case TokenKind::kInt: {
      Next();
      ExprPtr e = Make(Expr::Kind::kLiteral, t.pos);
      try {
        e->literal = std::stoll(t.text);
      } catch (...) {
        throw Error{"integer literal out of range", t.pos};
      }
      return e;
    }
    case TokenKind::kFloat: {
      Next();
      ExprPtr e = Make(Expr::Kind::kLiteral, t.pos);
      // Python's float(): out-of-range literals become inf or 0.0, never an error.
      e->literal = std::strtod(t.text.c_str(), nullptr);
      return e;
    }
    case TokenKind::kOp:
      if (t.text == "(") return ParseParen();
      if (t.text == "[") return ParseList();
      if (t.text == "{") return ParseDict();
      break;
    default:
      break;
  }
  Unexpected("an expression");
}

ExprPtr Parser::ParseParen() {
  const size_t pos = Next().pos;
  if (IsOp(")")) {
    Next();
    return Make(Expr::Kind::kTuple, pos);
  }
  ExprPtr first = ParseExpression(true);
  if (IsOp(")")) {
    Next();
    return first;
  }
  ExprPtr tuple = Make(Expr::Kind::kTuple, pos);
  tuple->items.push_back(std::move(first));
  while (IsOp(",")) {
    Next();
    if (IsOp(")")) break;
    tuple->items.push_back(ParseExpression(true));
  }
  ExpectOp(")");
  return tuple;
}

ExprPtr Parser::ParseList() {
  ExprPtr list = Make(Expr::Kind::kList, Next().pos);
  while (!IsOp("]")) {
    if (!list->items.empty()) ExpectOp(",");
    if (IsOp("]")) break;
    list->items.push_back(ParseExpression(true));
  }
  Next();
  return list;
}

ExprPtr Parser::ParseDict() {
  ExprPtr dict = Make(Expr::Kind::kDict, Next().pos);
  while (!IsOp("}")) {
    if (!dict->items.empty()) ExpectOp(",");
    if (IsOp("}")) break;
    dict->items.push_back(ParseExpression(true));
    ExpectOp(":");
    dict->items.push_back(ParseExpression(true));
  }
  Next();
  return dict;
}

ExprPtr Parser::ParsePostfix(ExprPtr e) {
  while (true) {
    if (IsOp(".")) {
      const size_t pos = Next().pos;
      if (Peek().kind == TokenKind::kInt) {
        ExprPtr sub = Make(Expr::Kind::kSubscript, pos);
        ExprPtr index = Make(Expr::Kind::kLiteral, Peek().pos);
        const Token& digits = Next();
        try {
          index->literal = std::stoll(digits.text);
        } catch (...) {
          throw Error{"integer literal out of range", digits.pos};
        }
        sub->items.push_back(std::move(e));
        sub->items.push_back(std::move(index));
        e = std::move(sub);
        continue;
      }
      ExprPtr attr = Make(Expr::Kind::kAttr, pos);
      attr->name = ExpectName();
      attr->items.push_back(std::move(e));
      e = std::move(attr);
    } else if (IsOp("[")) {
      e = ParseSubscript(std::move(e));
    } else if (IsOp("(")) {
      e = ParseCall(std::move(e));
    } else {
      return e;
    }
  }
}

ExprPtr Parser::ParseSubscript(ExprPtr obj) {
  const size_t pos = Next().pos;
  ExprPtr parts[3];
  int colons = 0;
  if (!IsOp(":")) parts[0] = ParseExpression(true);
  while (IsOp(":") && colons < 2) {
    Next();
    ++colons;
    if (!IsOp(":") && !IsOp("]")) parts[colons] = ParseExpression(true);
  }
  ExpectOp("]");
  if (colons == 0) {
    if (!parts[0]) throw Error{"empty subscript", pos};
    ExprPtr sub = Make(Expr::Kind::kSubscript, pos);
    sub->items.push_back(std::move(obj));
    sub->items.push_back(std::move(parts[0]));
    return sub;
  }
  ExprPtr slice = Make(Expr::Kind::kSlice, pos);
  slice->items.push_back(std::move(obj));
  for (ExprPtr& p : parts) slice->items.push_back(std::move(p));
  return slice;
}

void Parser::ParseArgs(Expr* e) {
  ExpectOp("(");
  while (!IsOp(")")) {
    if (!e->args.empty() || !e->kwargs.empty()) ExpectOp(",");
    if (IsOp(")")) break;
    if (IsOp("*") || IsOp("**")) throw Error{"unsupported: '*' arguments", Peek().pos};
    if (Peek().kind == TokenKind::kName && IsOp("=", 1)) {
      std::string key = Next().text;
      Next();
      e->kwargs.emplace_back(std::move(key), ParseExpression(true));
    } else {
      if (!e->kwargs.empty()) throw Error{"positional argument after keyword argument", Peek().pos};
      e->args.push_back(ParseExpression(true));
    }
  }
  Next();
}

ExprPtr Parser::ParseCall(ExprPtr callee) {
  ExprPtr call = Make(Expr::Kind::kCall, Peek().pos);
  call->items.push_back(std::move(callee));
  ParseArgs(call.get());
  return call;
}

ExprPtr Parser::ParseFilterExpr(ExprPtr e) {
  while (true) {
    if (IsOp("|")) {
      Next();
      ExprPtr f = Make(Expr::Kind::kFilter, Peek().pos);
      f->name = ExpectName();
      if (!IsKnownFilter(f->name)) throw Error{absl::StrCat("unsupported filter '", f->name, "'"), f->pos};
      f->items.push_back(std::move(e));
      if (IsOp("(")) ParseArgs(f.get());
      e = std::move(f);
    } else if (IsName("is")) {
      Next();
      ExprPtr t = Make(Expr::Kind::kTest, Peek().pos);
      if (IsName("not")) {
        Next();
        t->negated = true;
        t->pos = Peek().pos;
      }
      t->name = ExpectName();
      if (!IsKnownTest(t->name)) throw Error{absl::StrCat("unsupported test '", t->name, "'"), t->pos};
      t->items.push_back(std::move(e));
      if (IsOp("(")) {
        ParseArgs(t.get());
      } else {
        const Token& a = Peek();
        const bool starts_arg =
            a.kind == TokenKind::kString || a.kind == TokenKind::kInt || a.kind == TokenKind::kFloat ||
            (a.kind == TokenKind::kName && a.text != "else" && a.text != "or" && a.text != "and" &&
             a.text != "if" && a.text != "is") ||
            (a.kind == TokenKind::kOp && (a.text == "[" || a.text == "{"));
        if (starts_arg) t->args.push_back(ParsePostfix(ParsePrimary()));
      }
      e = std::move(t);
    } else if (IsOp("(")) {
      e = ParseCall(std::move(e));
    } else {
      return e;
    }
  }
}

}  // namespace tandem::jinja::parser_internal
