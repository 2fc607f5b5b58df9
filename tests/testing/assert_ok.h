// ASSERT_OK_AND_ASSIGN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>);
// fails the test with the status unless it is OK, else moves the value into
// `lhs` (a declaration or an lvalue). For gtest bodies only (it returns).
#pragma once

#include <utility>

#include "gtest/gtest.h"

#define TANDEM_CAT_INNER(a, b) a##b
#define TANDEM_CAT(a, b) TANDEM_CAT_INNER(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) ASSERT_OK_AND_ASSIGN_IMPL(TANDEM_CAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.status();          \
  lhs = std::move(*tmp)
