// jinja AST: expressions and statements of the supported subset. Plain
// structs owned top-down through unique_ptr; `pos` is the byte offset in the
// normalized source, for error messages.
//
// Thread-safety: immutable after parsing; shared by concurrent renders.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/value.h"

namespace tandem::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // items
    kTuple,      // items (evaluates to a list)
    kDict,       // items: key, value, key, value, ...
    kAttr,       // items[0].name
    kSubscript,  // items[0][items[1]]
    kSlice,      // items[0][items[1]:items[2]:items[3]] (null parts omitted)
    kCall,       // items[0](args, kwargs)
    kFilter,     // items[0] | name(args, kwargs)
    kTest,       // items[0] is [not] name(args)
    kUnary,      // name = "not" / "-" / "+"; items[0]
    kBinary,     // name = operator; items[0], items[1]
    kCompare,    // items[0] ops[0] items[1] ops[1] items[2] ... (chained)
    kCond,       // items[1] if items[0] else items[2] (items[2] may be null)
  };
  Kind kind;
  size_t pos = 0;
  std::string name;
  Json literal;
  std::vector<ExprPtr> items;
  std::vector<std::string> ops;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; bodies.back() is the else when bodies > conditions
    kFor,       // for targets in expr [if filter]: bodies[0]; else: bodies[1] (may be empty)
    kSet,       // set targets[0] [. attribute] = expr
    kSetBlock,  // set targets[0] %} bodies[0] {% endset
    kBreak,
    kContinue,
    kMacro,       // macro targets[0](targets[1..] = conditions[0..] defaults, null when none): bodies[0]
    kGeneration,  // HF's {% generation %}: bodies[0] rendered as is
  };
  Kind kind;
  size_t pos = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::string attribute;  // kSet on a namespace: `set ns.attribute = ...`
};

}  // namespace tandem::jinja
