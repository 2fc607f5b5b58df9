// jinja parser; see parser.h. This half parses the tags (if, for, set,
// macro, generation, ...); expressions are in parser_expr.cc.
#include "engine/tokenizer/jinja/parser.h"

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/parser_internal.h"

namespace tandem::jinja {
namespace parser_internal {

// Parses until one of `ends` opens a tag; consumes `{%` and the end name
// (the caller parses the rest of that tag) and stores it in *which.
Body Parser::ParseBody(std::initializer_list<std::string_view> ends, std::string* which, size_t open_pos) {
  DepthGuard guard(this, Peek().pos);
  Body body;
  while (true) {
    const Token& t = Peek();
    if (t.kind == TokenKind::kEof) {
      if (ends.size() == 0) return body;
      std::string names;
      for (std::string_view e : ends) absl::StrAppend(&names, names.empty() ? "" : " or ", "'", std::string(e), "'");
      throw Error{absl::StrCat("unclosed tag: expected ", names, " before the end of the template"), open_pos};
    }
    if (t.kind == TokenKind::kText) {
      auto s = std::make_unique<Stmt>();
      s->kind = Stmt::Kind::kText;
      s->pos = t.pos;
      s->text = t.text;
      body.push_back(std::move(s));
      Next();
    } else if (t.kind == TokenKind::kVarBegin) {
      auto s = std::make_unique<Stmt>();
      s->kind = Stmt::Kind::kOutput;
      s->pos = Next().pos;
      s->expr = ParseTupleOrExpr();
      ExpectKind(TokenKind::kVarEnd, "'}}'");
      body.push_back(std::move(s));
    } else if (t.kind == TokenKind::kBlockBegin) {
      const Token& name = Peek(1);
      if (name.kind != TokenKind::kName) {
        Next();
        Unexpected("a tag name");
      }
      for (std::string_view e : ends) {
        if (name.text == e) {
          Next();
          Next();
          *which = name.text;
          return body;
        }
      }
      Next();
      body.push_back(ParseStatement());
    } else {
      Unexpected("text or a tag");
    }
  }
}

StmtPtr Parser::ParseStatement() {
  const Token& tag = Next();
  auto s = std::make_unique<Stmt>();
  s->pos = tag.pos;
  const std::string& name = tag.text;
  if (name == "if") {
    ParseIf(s.get());
  } else if (name == "for") {
    ParseFor(s.get());
  } else if (name == "set") {
    ParseSet(s.get());
  } else if (name == "break" || name == "continue") {
    if (loop_depth_ == 0) throw Error{absl::StrCat("'", name, "' outside a for loop"), tag.pos};
    s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    ExpectBlockEnd();
  } else if (name == "macro") {
    ParseMacro(s.get());
  } else if (name == "generation") {
    s->kind = Stmt::Kind::kGeneration;
    ExpectBlockEnd();
    std::string which;
    s->bodies.push_back(ParseBody({"endgeneration"}, &which, s->pos));
    ExpectBlockEnd();
  } else if (name == "elif" || name == "else" || name == "endif" || name == "endfor" || name == "endset" ||
             name == "endmacro" || name == "endgeneration") {
    throw Error{absl::StrCat("unexpected tag '", name, "'"), tag.pos};
  } else {
    throw Error{absl::StrCat("unsupported tag '", name, "'"), tag.pos};
  }
  return s;
}

void Parser::ParseIf(Stmt* s) {
  s->kind = Stmt::Kind::kIf;
  std::string which = "if";
  while (which == "if" || which == "elif") {
    s->conditions.push_back(ParseTupleOrExpr());
    ExpectBlockEnd();
    s->bodies.push_back(ParseBody({"elif", "else", "endif"}, &which, s->pos));
  }
  if (which == "else") {
    ExpectBlockEnd();
    s->bodies.push_back(ParseBody({"endif"}, &which, s->pos));
  }
  ExpectBlockEnd();
}

void Parser::ParseFor(Stmt* s) {
  s->kind = Stmt::Kind::kFor;
  s->targets.push_back(ExpectName());
  while (IsOp(",")) {
    Next();
    s->targets.push_back(ExpectName());
  }
  if (!IsName("in")) Unexpected("'in'");
  Next();
  s->expr = ParseExpression(/*allow_cond=*/false);
  if (IsName("if")) {
    Next();
    s->filter = ParseExpression(true);
  }
  if (IsName("recursive")) throw Error{"unsupported for-loop modifier 'recursive'", Peek().pos};
  ExpectBlockEnd();
  ++loop_depth_;
  std::string which;
  s->bodies.push_back(ParseBody({"else", "endfor"}, &which, s->pos));
  --loop_depth_;
  s->bodies.emplace_back();
  if (which == "else") {
    ExpectBlockEnd();
    s->bodies.back() = ParseBody({"endfor"}, &which, s->pos);
  }
  ExpectBlockEnd();
}

void Parser::ParseMacro(Stmt* s) {
  s->kind = Stmt::Kind::kMacro;
  s->targets.push_back(ExpectName());
  ExpectOp("(");
  while (!IsOp(")")) {
    if (s->targets.size() > 1) ExpectOp(",");
    if (IsOp(")")) break;
    if (IsOp("*") || IsOp("**")) throw Error{"unsupported: '*' macro parameters", Peek().pos};
    s->targets.push_back(ExpectName());
    if (IsOp("=")) {
      Next();
      s->conditions.push_back(ParseExpression(true));
    } else {
      s->conditions.push_back(nullptr);
    }
  }
  Next();
  ExpectBlockEnd();
  const int saved_loop_depth = loop_depth_;
  loop_depth_ = 0;  // break/continue cannot leave a macro
  std::string which;
  s->bodies.push_back(ParseBody({"endmacro"}, &which, s->pos));
  loop_depth_ = saved_loop_depth;
  if (Peek().kind == TokenKind::kName && Peek().text == s->targets[0]) Next();
  ExpectBlockEnd();
}

void Parser::ParseSet(Stmt* s) {
  s->targets.push_back(ExpectName());
  if (IsOp(".")) {
    Next();
    s->attribute = ExpectName();
  }
  if (IsOp(",")) throw Error{"unsupported: 'set' with several targets", Peek().pos};
  if (Peek().kind == TokenKind::kBlockEnd && s->attribute.empty()) {
    Next();
    s->kind = Stmt::Kind::kSetBlock;
    std::string which;
    s->bodies.push_back(ParseBody({"endset"}, &which, s->pos));
    ExpectBlockEnd();
    return;
  }
  if (IsOp("|")) throw Error{"unsupported: filtered block 'set'", Peek().pos};
  s->kind = Stmt::Kind::kSet;
  ExpectOp("=");
  s->expr = ParseTupleOrExpr();
  ExpectBlockEnd();
}

}  // namespace parser_internal

Body Parse(const std::vector<Token>& tokens) { return parser_internal::Parser(tokens).ParseTemplate(); }

}  // namespace tandem::jinja
