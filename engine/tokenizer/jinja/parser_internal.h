// Internal to the jinja parser (not a public API): the Parser class, with
// its token helpers inline; tags are parsed in parser.cc and expressions in
// parser_expr.cc.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/lexer.h"
#include "engine/tokenizer/jinja/parser.h"

namespace tandem::jinja::parser_internal {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Body ParseTemplate() {
    std::string which;
    Body body = ParseBody({}, &which, 0);
    return body;
  }

 private:
  // Counts nesting; throws past kMaxParseDepth.
  class DepthGuard {
   public:
    DepthGuard(Parser* p, size_t pos) : p_(p) {
      if (++p_->depth_ > kMaxParseDepth) throw Error{"template nests too deeply", pos};
    }
    ~DepthGuard() { --p_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser* p_;
  };

  const Token& Peek(size_t ahead = 0) const {
    const size_t i = std::min(next_ + ahead, tokens_.size() - 1);
    return tokens_[i];
  }
  const Token& Next() {
    const Token& t = tokens_[next_];
    if (next_ + 1 < tokens_.size()) ++next_;
    return t;
  }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kOp && Peek(ahead).text == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kName && Peek(ahead).text == name;
  }
  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kText: return "text";
      case TokenKind::kVarBegin: return "'{{'";
      case TokenKind::kVarEnd: return "'}}'";
      case TokenKind::kBlockBegin: return "'{%'";
      case TokenKind::kBlockEnd: return "'%}'";
      case TokenKind::kEof: return "end of template";
      case TokenKind::kString: return "string literal";
      default: return absl::StrCat("'", t.text, "'");
    }
  }
  [[noreturn]] void Unexpected(const std::string& wanted) const {
    throw Error{absl::StrCat("expected ", wanted, ", found ", Describe(Peek())), Peek().pos};
  }
  void ExpectOp(const std::string& op) {
    if (!IsOp(op)) Unexpected(absl::StrCat("'", op, "'"));
    Next();
  }
  std::string ExpectName() {
    if (Peek().kind != TokenKind::kName) Unexpected("a name");
    return Next().text;
  }
  void ExpectKind(TokenKind kind, const std::string& what) {
    if (Peek().kind != kind) Unexpected(what);
    Next();
  }
  void ExpectBlockEnd() { ExpectKind(TokenKind::kBlockEnd, "'%}'"); }

  static ExprPtr Make(Expr::Kind kind, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  // ---- statements (parser.cc) ----

  Body ParseBody(std::initializer_list<std::string_view> ends, std::string* which, size_t open_pos);
  StmtPtr ParseStatement();
  void ParseIf(Stmt* s);
  void ParseFor(Stmt* s);
  void ParseMacro(Stmt* s);
  void ParseSet(Stmt* s);

  // ---- expressions (parser_expr.cc) ----

  ExprPtr ParseTupleOrExpr();
  ExprPtr ParseExpression(bool allow_cond);
  ExprPtr Binary(std::string op, size_t pos, ExprPtr l, ExprPtr r);
  ExprPtr ParseOr();
  ExprPtr ParseAnd();
  ExprPtr ParseNot();
  ExprPtr ParseCompare();
  ExprPtr ParseMath1();
  ExprPtr ParseConcat();
  ExprPtr ParseMath2();
  ExprPtr ParsePow();
  ExprPtr ParseUnary(bool with_filter);
  ExprPtr ParsePrimary();
  ExprPtr ParseParen();
  ExprPtr ParseList();
  ExprPtr ParseDict();
  ExprPtr ParsePostfix(ExprPtr e);
  ExprPtr ParseSubscript(ExprPtr obj);
  void ParseArgs(Expr* e);
  ExprPtr ParseCall(ExprPtr callee);
  ExprPtr ParseFilterExpr(ExprPtr e);

  const std::vector<Token>& tokens_;
  size_t next_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace tandem::jinja::parser_internal
