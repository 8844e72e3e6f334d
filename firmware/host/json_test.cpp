// json_test: checks HyperTCPJson, the library's JSON scanner, on inputs the
// network tests cannot easily produce (escapes, nesting, malformed text).
// Prints "ok N" and exits 0 when every check passes.

#include <Arduino.h>
#include <HyperTCPProtocol.h>

namespace {

int checks = 0;
int failures = 0;

void expect(bool condition, const char* what, int line) {
  checks++;
  if (!condition) {
    failures++;
    printf("FAIL line %d: %s\n", line, what);
  }
}
#define EXPECT(condition) expect((condition), #condition, __LINE__)

// The raw text of top-level `key` in `json`, or "<none>".
const char* valueOf(const char* json, const char* key) {
  static char out[256];
  HyperTCPJsonSpan v;
  if (!HyperTCPJson::find(json, strlen(json), key, v)) return "<none>";
  snprintf(out, sizeof out, "%.*s", static_cast<int>(v.len), v.ptr);
  return out;
}

bool is(const char* json, const char* key, const char* expected) {
  return strcmp(valueOf(json, key), expected) == 0;
}

// `key` decoded as a string, or "<none>".
const char* stringOf(const char* json, const char* key) {
  static char out[64];
  HyperTCPJsonSpan v;
  if (!HyperTCPJson::find(json, strlen(json), key, v)) return "<none>";
  if (!HyperTCPJson::getString(v, out, sizeof out)) return "<bad>";
  return out;
}

}  // namespace

void setup() {
  // The server's delivery shape, in either key order, with white space.
  const char* msg = "{\"from\": \"alice\", \"payload\": {\"a\": [1, {\"b\": \"}\"}], \"c\": null}}";
  EXPECT(is(msg, "from", "\"alice\""));
  EXPECT(is(msg, "payload", "{\"a\": [1, {\"b\": \"}\"}], \"c\": null}"));
  EXPECT(is("{\"payload\":{},\"from\":\"x\"}", "payload", "{}"));
  EXPECT(is(" \r\n\t{ \"from\" :\"x\" , \"payload\" : { } } \n", "payload", "{ }"));

  // Only top-level keys match; nested ones with the same name do not.
  EXPECT(is("{\"payload\":{\"from\":\"inner\"},\"from\":\"outer\"}", "from", "\"outer\""));
  EXPECT(is("{\"a\":{\"from\":\"inner\"}}", "from", "<none>"));
  // Keys and braces inside strings are text, not structure.
  EXPECT(is("{\"a\":\"\\\"from\\\": {\",\"from\":\"y\"}", "from", "\"y\""));
  EXPECT(is("{\"a\":\"back\\\\\",\"from\":\"z\"}", "from", "\"z\""));
  // Escaped key names are compared decoded.
  EXPECT(is("{\"\\u0066rom\":\"e\"}", "from", "\"e\""));
  EXPECT(is("{\"fr\\u00f6m\":\"e\"}", "from", "<none>"));
  // First of duplicate keys wins.
  EXPECT(is("{\"from\":\"1\",\"from\":\"2\"}", "from", "\"1\""));
  // Scalars.
  EXPECT(is("{\"port\":8080,\"tls\":true}", "port", "8080"));
  EXPECT(is("{\"port\":8080,\"tls\":true}", "tls", "true"));
  EXPECT(is("{\"n\":-1.5e+3}", "n", "-1.5e+3"));
  EXPECT(is("{}", "from", "<none>"));

  // Malformed objects are refused as a whole, even when the key is there.
  const char* bad[] = {
      "",
      "[]",
      "\"from\"",
      "{",
      "{\"from\"}",
      "{\"from\":}",
      "{\"from\":\"x\"",
      "{\"from\":\"x\",}",
      "{\"from\":\"x\" \"payload\":{}}",
      "{\"from\":\"unterminated}",
      "{\"from\":{\"a\":[1,2}}",
      "{\"from\":[}",
      "{\"from\":\"x\"}}",
      "{\"from\":\"x\"} trailing",
      "{\"from\":\"tab\tinside\"}",
      "{\"from\":@}",
      "{\"from\":\"x\",\"payload\":{\"a\":\"\\\"}}",
      "{from:\"x\"}",
  };
  for (const char* text : bad) {
    HyperTCPJsonSpan v;
    bool found = HyperTCPJson::find(text, strlen(text), "from", v);
    expect(!found, text, __LINE__);
  }
  // A length shorter than the text: only the first `len` bytes count.
  {
    HyperTCPJsonSpan v;
    const char* text = "{\"from\":\"x\"}{\"junk\"";
    EXPECT(HyperTCPJson::find(text, 12, "from", v));
    EXPECT(!HyperTCPJson::find(text, 11, "from", v));
  }
  // Nesting deeper than the limit is refused, not overflowed.
  {
    char deep[200];
    size_t n = 0;
    n += static_cast<size_t>(snprintf(deep, sizeof deep, "{\"payload\":"));
    for (int k = 0; k < 40; k++) deep[n++] = '[';
    for (int k = 0; k < 40; k++) deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    EXPECT(is(deep, "payload", "<none>"));
  }

  // String decoding: escapes, \u to UTF-8, surrogate pairs, refusals.
  EXPECT(strcmp(stringOf("{\"s\":\"plain\"}", "s"), "plain") == 0);
  EXPECT(strcmp(stringOf("{\"s\":\"a\\\"b\\\\c\\/d\\n\"}", "s"), "a\"b\\c/d\n") == 0);
  EXPECT(strcmp(stringOf("{\"s\":\"\\u00e9\\u20AC\"}", "s"), "\xc3\xa9\xe2\x82\xac") == 0);
  EXPECT(strcmp(stringOf("{\"s\":\"\\ud83d\\ude00\"}", "s"), "\xf0\x9f\x98\x80") == 0);
  EXPECT(strcmp(stringOf("{\"s\":\"caf\xc3\xa9\"}", "s"), "caf\xc3\xa9") == 0);
  EXPECT(strcmp(stringOf("{\"s\":\"\\ud83d\"}", "s"), "<bad>") == 0);    // lone high surrogate
  EXPECT(strcmp(stringOf("{\"s\":\"\\ude00\"}", "s"), "<bad>") == 0);    // lone low surrogate
  EXPECT(strcmp(stringOf("{\"s\":\"\\u0000\"}", "s"), "<bad>") == 0);    // would cut the C string
  EXPECT(strcmp(stringOf("{\"s\":\"\\x41\"}", "s"), "<bad>") == 0);      // not a JSON escape
  EXPECT(strcmp(stringOf("{\"s\":\"\\u12G4\"}", "s"), "<bad>") == 0);
  EXPECT(strcmp(stringOf("{\"s\":1}", "s"), "<bad>") == 0);
  {
    // Exactly fitting output (with its NUL) works; one byte less does not.
    HyperTCPJsonSpan v;
    const char* text = "{\"s\":\"abcd\"}";
    char out[5];
    EXPECT(HyperTCPJson::find(text, strlen(text), "s", v));
    EXPECT(HyperTCPJson::getString(v, out, 5) && strcmp(out, "abcd") == 0);
    EXPECT(!HyperTCPJson::getString(v, out, 4));
  }
  {
    // In place, as the library decodes the sender id.
    char text[] = "{\"from\":\"a\\u00e9\\\"\\ud83d\\ude00z\"}";
    HyperTCPJsonSpan v;
    EXPECT(HyperTCPJson::find(text, strlen(text), "from", v));
    char* place = const_cast<char*>(v.ptr);
    EXPECT(HyperTCPJson::getString(v, place, v.len));
    EXPECT(strcmp(place, "a\xc3\xa9\"\xf0\x9f\x98\x80z") == 0);
  }
  {
    HyperTCPJsonSpan v;
    const char* text = "{\"command\":\"cont\\u0072ol\",\"n\":\"control\"}";
    EXPECT(HyperTCPJson::find(text, strlen(text), "command", v));
    EXPECT(HyperTCPJson::equals(v, "control"));
    EXPECT(!HyperTCPJson::equals(v, "contro"));
    EXPECT(!HyperTCPJson::equals(v, "controls"));
  }

  // Unsigned integers.
  {
    uint32_t n = 0;
    HyperTCPJsonSpan v;
    v.ptr = "8080";
    v.len = 4;
    EXPECT(HyperTCPJson::getUint(v, n) && n == 8080);
    v.ptr = "4294967295";
    v.len = 10;
    EXPECT(HyperTCPJson::getUint(v, n) && n == 4294967295u);
    v.ptr = "4294967296";
    EXPECT(!HyperTCPJson::getUint(v, n));
    v.ptr = "-1";
    v.len = 2;
    EXPECT(!HyperTCPJson::getUint(v, n));
    v.ptr = "1.5";
    v.len = 3;
    EXPECT(!HyperTCPJson::getUint(v, n));
    v.len = 0;
    EXPECT(!HyperTCPJson::getUint(v, n));
  }

  printf("%s %d\n", failures == 0 ? "ok" : "failed", checks);
  exit(failures == 0 ? 0 : 1);
}

void loop() {}
