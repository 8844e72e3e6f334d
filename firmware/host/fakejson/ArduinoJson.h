// A test double of ArduinoJson 6, for the machines that run the test suite
// (ArduinoJson is not packaged for them).  It has only what the HyperTCP
// library and json_hook_test use, and models what matters to them: a
// StaticJsonDocument's fixed capacity (ArduinoJson 6 takes 16 bytes per
// member or element on a 32-bit chip, 32 on a 64-bit host, plus a copy of
// every string with its NUL), its nesting limit of 10, and refusing text
// that is not JSON.  A JsonObject here is a view of the text it came from.
//
// This is not ArduinoJson.  The same tests run against the real ArduinoJson
// 6 and 7 on demand (tests/test_firmware_arduinojson.py, ARDUINOJSON_DIR).

#ifndef HYPERTCP_FAKE_ARDUINOJSON_H
#define HYPERTCP_FAKE_ARDUINOJSON_H

#include <stddef.h>
#include <string.h>

#define ARDUINOJSON_VERSION_MAJOR 6
#define HYPERTCP_FAKE_ARDUINOJSON 1

class DeserializationError {
 public:
  enum Code { Ok, EmptyInput, IncompleteInput, InvalidInput, NoMemory, TooDeep };

  DeserializationError(Code code) : _code(code) {}
  explicit operator bool() const { return _code != Ok; }
  bool operator==(Code code) const { return _code == code; }
  Code code() const { return _code; }
  const char* c_str() const {
    static const char* const names[] = {"Ok", "EmptyInput", "IncompleteInput", "InvalidInput", "NoMemory",
                                        "TooDeep"};
    return names[_code];
  }

 private:
  Code _code;
};

class JsonObject {
 public:
  JsonObject() : _text(nullptr), _len(0), _size(0) {}
  JsonObject(const char* text, size_t len, size_t members) : _text(text), _len(len), _size(members) {}
  bool isNull() const { return _text == nullptr; }
  size_t size() const { return _size; }
  const char* text() const { return _text; }
  size_t textLength() const { return _len; }

 private:
  const char* _text;
  size_t _len;
  size_t _size;
};

namespace fakejson {

const size_t kSlot = 4 * sizeof(void*);
const int kNestingLimit = 10;

// Walks `json` as ArduinoJson 6 would fill a document: the bytes it needs
// (a slot per member and per array element, a copy of every string), the
// top-level object's member count, or an error.
inline DeserializationError measure(const char* json, size_t len, size_t& bytes, size_t& members) {
  bytes = 0;
  members = 0;
  char open[kNestingLimit];
  int depth = 0;
  bool elementStarts = false;  // the next value is a new array element
  for (size_t i = 0; i < len; i++) {
    const char c = json[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (depth == 0 && c != '{') return i == 0 && c == '\0' ? DeserializationError::EmptyInput
                                                           : DeserializationError::InvalidInput;
    if (elementStarts && c != ']') bytes += kSlot;
    elementStarts = false;
    if (c == '"') {
      const size_t start = ++i;
      while (i < len && json[i] != '"') i += json[i] == '\\' ? 2 : 1;
      if (i >= len) return DeserializationError::IncompleteInput;
      bytes += i - start + 1;  // the copy and its NUL
    } else if (c == '{' || c == '[') {
      if (depth == kNestingLimit) return DeserializationError::TooDeep;
      open[depth++] = c;
      elementStarts = c == '[';
    } else if (c == '}' || c == ']') {
      if (open[depth - 1] != (c == '}' ? '{' : '[')) return DeserializationError::InvalidInput;
      if (--depth == 0) return DeserializationError::Ok;
    } else if (c == ':') {
      bytes += kSlot;  // a member
      if (depth == 1) members++;
    } else if (c == ',') {
      elementStarts = open[depth - 1] == '[';
    } else if (strchr("-0123456789.eE+truefalsn", c) == nullptr || c == '\0') {
      return DeserializationError::InvalidInput;
    }
  }
  return len == 0 ? DeserializationError::EmptyInput : DeserializationError::IncompleteInput;
}

}  // namespace fakejson

template <size_t Capacity>
class StaticJsonDocument {
 public:
  StaticJsonDocument() : _text(nullptr), _len(0), _members(0) {}

  template <typename T>
  T as() const {
    return T(_text, _len, _members);
  }

  void set(const char* text, size_t len, size_t members) {
    _text = text;
    _len = len;
    _members = members;
  }
  static size_t capacity() { return Capacity; }

 private:
  const char* _text;
  size_t _len;
  size_t _members;
};

template <size_t Capacity>
DeserializationError deserializeJson(StaticJsonDocument<Capacity>& doc, const char* json, size_t len) {
  size_t bytes = 0;
  size_t members = 0;
  DeserializationError error = fakejson::measure(json, len, bytes, members);
  if (!error && bytes > Capacity) error = DeserializationError::NoMemory;
  if (!error) doc.set(json, len, members);
  return error;
}

template <size_t Capacity>
DeserializationError deserializeJson(StaticJsonDocument<Capacity>& doc, const char* json) {
  return deserializeJson(doc, json, strlen(json));
}

inline size_t measureJson(const JsonObject& object) { return object.textLength(); }

// Writes the object's text and a NUL if there is room; returns the bytes
// written, NUL excluded (ArduinoJson's contract).
inline size_t serializeJson(const JsonObject& object, char* out, size_t size) {
  const size_t n = object.textLength() < size ? object.textLength() : size;
  memcpy(out, object.text(), n);
  if (n < size) out[n] = '\0';
  return n;
}

#endif  // HYPERTCP_FAKE_ARDUINOJSON_H
