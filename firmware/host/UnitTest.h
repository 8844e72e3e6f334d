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
#include <type_traits>
#include <vector>

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

// Printable text for a value, for failure messages: Show<T>::of(v).  Test
// files specialize it for their own types (a class template, so a
// specialization written after this header is still found).
template <typename T>
struct Show {
  static std::string of(const T& v) { return std::to_string(v); }
};
template <>
struct Show<std::string> {
  // Byte strings (frame payloads) with the unprintable bytes escaped.
  static std::string of(const std::string& bytes) {
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
};
template <>
struct Show<const char*> {
  static std::string of(const char* text) { return text == nullptr ? "null" : Show<std::string>::of(text); }
};
template <>
struct Show<bool> {
  static std::string of(bool v) { return v ? "true" : "false"; }
};
template <typename T>
struct Show<std::vector<T> > {
  static std::string of(const std::vector<T>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); i++) out += (i ? ", " : "") + Show<T>::of(items[i]);
    return out + "]";
  }
};

// One function per pair of types, not code per check: keeps the test
// programs quick to compile.
template <typename A, typename E>
void checkEqual(const A& actual, const E& expected, const char* what, const char* file, int line) {
  checks()++;
  if (actual == expected) return;
  typedef typename std::decay<A>::type ShownA;
  typedef typename std::decay<E>::type ShownE;
  fail(file, line, std::string(what) + ": got " + Show<ShownA>::of(actual) + ", expected " +
                       Show<ShownE>::of(expected));
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
#define CHECK_EQ(actual, expected) \
  unittest::checkEqual((actual), (expected), #actual " == " #expected, __FILE__, __LINE__)

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
