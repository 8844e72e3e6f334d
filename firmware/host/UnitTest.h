// UnitTest.h - the smallest test runner that does the job: TEST(name)
// registers a case, CHECK(...) records a failure and carries on, and
// runUnitTests() runs the cases named on the command line (all without
// names), printing "ok NAME" or "FAIL NAME: file:line: what" per case.
// Lines starting with "# " are notes.  `--list` prints the names.  The exit status is 0 only if every case ran
// and passed; an unknown name is a failure.

#ifndef HYPERTCP_HOST_UNIT_TEST_H
#define HYPERTCP_HOST_UNIT_TEST_H

#include <stdio.h>
#include <string.h>

#include <string>

struct UnitTestCase {
  const char* name;
  void (*body)();
  UnitTestCase* next;
};

namespace unittest {

inline UnitTestCase*& registry() {
  static UnitTestCase* head = nullptr;
  return head;
}
inline int& failures() {
  static int count = 0;
  return count;
}
inline int& checks() {
  static int count = 0;
  return count;
}
inline const char*& current() {
  static const char* name = "";
  return name;
}

struct Registrar {
  Registrar(UnitTestCase* test) {
    // Appended, so cases run in the order they are written.
    UnitTestCase** at = &registry();
    while (*at != nullptr) at = &(*at)->next;
    *at = test;
  }
};

inline void fail(const char* file, int line, const std::string& what) {
  failures()++;
  printf("FAIL %s: %s:%d: %s\n", current(), file, line, what.c_str());
  fflush(stdout);
}

// Printable text for a byte string (a frame payload, say).
inline std::string show(const std::string& bytes) {
  std::string out = "\"";
  for (char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char esc[8];
      snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    }
  }
  return out + "\"";
}
inline std::string show(const char* text) { return text == nullptr ? "null" : show(std::string(text)); }
inline std::string show(bool v) { return v ? "true" : "false"; }
template <typename T>
std::string show(T v) {
  return std::to_string(v);
}

}  // namespace unittest

#define TEST(name)                                                                          \
  static void unit_test_##name();                                                           \
  static UnitTestCase unit_case_##name = {#name, unit_test_##name, nullptr};                 \
  static unittest::Registrar unit_registrar_##name(&unit_case_##name);                       \
  static void unit_test_##name()

#define CHECK(condition)                                                 \
  do {                                                                   \
    unittest::checks()++;                                                \
    if (!(condition)) unittest::fail(__FILE__, __LINE__, #condition);    \
  } while (0)

// Compares with ==, and shows both sides when they differ.
#define CHECK_EQ(actual, expected)                                                          \
  do {                                                                                      \
    unittest::checks()++;                                                                   \
    const auto unit_a = (actual);  /* copies: `actual` may be a temporary's part */ \
    const auto unit_e = (expected);                                                         \
    if (!(unit_a == unit_e)) {                                                              \
      unittest::fail(__FILE__, __LINE__,                                                    \
                     std::string(#actual " == " #expected ": got ") + unittest::show(unit_a) + \
                         ", expected " + unittest::show(unit_e));                           \
    }                                                                                       \
  } while (0)

inline int runUnitTests(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (UnitTestCase* t = unittest::registry(); t != nullptr; t = t->next) printf("%s\n", t->name);
    return 0;
  }
  int failed = 0;
  int ran = 0;
  for (UnitTestCase* t = unittest::registry(); t != nullptr; t = t->next) {
    bool wanted = argc < 2;
    for (int i = 1; i < argc; i++) wanted = wanted || strcmp(argv[i], t->name) == 0;
    if (!wanted) continue;
    unittest::current() = t->name;
    const int before = unittest::failures();
    t->body();
    ran++;
    if (unittest::failures() != before) {
      failed++;
    } else {
      printf("ok %s\n", t->name);
    }
    fflush(stdout);
  }
  const int asked = argc < 2 ? ran : argc - 1;
  if (ran != asked) printf("FAIL: %d of %d named cases exist\n", ran, asked);
  return failed == 0 && ran == asked && ran > 0 ? 0 : 1;
}

#endif  // HYPERTCP_HOST_UNIT_TEST_H
