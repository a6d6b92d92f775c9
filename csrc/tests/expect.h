// The C++ tests' check macro: counts checks and failures, prints each failure with its location.
// Each test file keeps its own counters (one executable per file) and returns non-zero when any failed.
#pragma once

#include <cstdio>

namespace {

int g_failures = 0;
int g_checks = 0;

#define EXPECT(cond, ...)                                       \
  do {                                                          \
    ++g_checks;                                                 \
    if (!(cond)) {                                              \
      ++g_failures;                                             \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                        \
      std::fprintf(stderr, "\n");                               \
    }                                                           \
  } while (0)

}  // namespace
