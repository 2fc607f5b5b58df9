// jinja parser; see parser.h.
#include "engine/tokenizer/jinja/parser.h"

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"

namespace tandem::jinja {
namespace {

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

  // ---- statements ----

  // Parses until one of `ends` opens a tag; consumes `{%` and the end name
  // (the caller parses the rest of that tag) and stores it in *which.
  Body ParseBody(std::initializer_list<std::string_view> ends, std::string* which, size_t open_pos) {
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

  StmtPtr ParseStatement() {
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

  void ParseIf(Stmt* s) {
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

  void ParseFor(Stmt* s) {
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

  void ParseMacro(Stmt* s) {
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

  void ParseSet(Stmt* s) {
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

  // ---- expressions ----

  // `a, b` at the top of an output, condition or set is a tuple, as in jinja2.
  ExprPtr ParseTupleOrExpr() {
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

  ExprPtr ParseExpression(bool allow_cond) {
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

  ExprPtr Binary(std::string op, size_t pos, ExprPtr l, ExprPtr r) {
    ExprPtr e = Make(Expr::Kind::kBinary, pos);
    e->name = std::move(op);
    e->items.push_back(std::move(l));
    e->items.push_back(std::move(r));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr l = ParseAnd();
    while (IsName("or")) {
      const size_t pos = Next().pos;
      l = Binary("or", pos, std::move(l), ParseAnd());
    }
    return l;
  }

  ExprPtr ParseAnd() {
    ExprPtr l = ParseNot();
    while (IsName("and")) {
      const size_t pos = Next().pos;
      l = Binary("and", pos, std::move(l), ParseNot());
    }
    return l;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this, Peek().pos);
      ExprPtr e = Make(Expr::Kind::kUnary, Next().pos);
      e->name = "not";
      e->items.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
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

  ExprPtr ParseMath1() {
    ExprPtr l = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Next();
      l = Binary(t.text, t.pos, std::move(l), ParseConcat());
    }
    return l;
  }

  ExprPtr ParseConcat() {
    ExprPtr l = ParseMath2();
    while (IsOp("~")) {
      const size_t pos = Next().pos;
      l = Binary("~", pos, std::move(l), ParseMath2());
    }
    return l;
  }

  ExprPtr ParseMath2() {
    ExprPtr l = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Next();
      l = Binary(t.text, t.pos, std::move(l), ParsePow());
    }
    return l;
  }

  ExprPtr ParsePow() {
    ExprPtr l = ParseUnary(true);
    if (IsOp("**")) throw Error{"unsupported operator '**'", Peek().pos};
    return l;
  }

  ExprPtr ParseUnary(bool with_filter) {
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

  ExprPtr ParsePrimary() {
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

  ExprPtr ParseParen() {
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

  ExprPtr ParseList() {
    ExprPtr list = Make(Expr::Kind::kList, Next().pos);
    while (!IsOp("]")) {
      if (!list->items.empty()) ExpectOp(",");
      if (IsOp("]")) break;
      list->items.push_back(ParseExpression(true));
    }
    Next();
    return list;
  }

  ExprPtr ParseDict() {
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

  ExprPtr ParsePostfix(ExprPtr e) {
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

  ExprPtr ParseSubscript(ExprPtr obj) {
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

  void ParseArgs(Expr* e) {
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

  ExprPtr ParseCall(ExprPtr callee) {
    ExprPtr call = Make(Expr::Kind::kCall, Peek().pos);
    call->items.push_back(std::move(callee));
    ParseArgs(call.get());
    return call;
  }

  ExprPtr ParseFilterExpr(ExprPtr e) {
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

  const std::vector<Token>& tokens_;
  size_t next_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body Parse(const std::vector<Token>& tokens) { return Parser(tokens).ParseTemplate(); }

}  // namespace tandem::jinja
