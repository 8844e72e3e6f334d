// HyperTCPJson.h - a small scanner for JSON text: no allocation, no copies.
//
// It answers one question well: "what is the raw text of the value of
// top-level key K in this object?"  Values are returned as spans into the
// caller's text.  It checks the structure it walks (strings and their
// escapes, bracket nesting, the key/colon/comma layout of the top-level
// object) and refuses anything it cannot walk, rather than guessing.  It does
// not validate the grammar inside nested values; the server already did.

#ifndef HYPERTCP_JSON_H
#define HYPERTCP_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct HyperTCPJsonSpan {
  const char* ptr;  // first byte of the value (a '"' for strings)
  size_t len;       // bytes in the value, quotes included for strings
};

class HyperTCPJson {
 public:
  // Finds top-level `key` in the object `json[0..len)`.  The whole object is
  // checked; on duplicate keys the first wins.  Returns false if the text is
  // not a well-formed object or the key is absent.
  static bool find(const char* json, size_t len, const char* key, HyperTCPJsonSpan& value) {
    if (json == nullptr || key == nullptr) return false;
    size_t i = skipSpace(json, len, 0);
    if (i >= len || json[i] != '{') return false;
    i = skipSpace(json, len, i + 1);
    bool found = false;
    if (i < len && json[i] == '}') {
      i++;
    } else {
      for (;;) {
        if (i >= len || json[i] != '"') return false;
        size_t keyStart = i;
        if (!skipString(json, len, i)) return false;
        size_t keyEnd = i;
        i = skipSpace(json, len, i);
        if (i >= len || json[i] != ':') return false;
        i = skipSpace(json, len, i + 1);
        size_t valueStart = i;
        if (!skipValue(json, len, i)) return false;
        if (!found && stringEquals(json + keyStart, keyEnd - keyStart, key)) {
          value.ptr = json + valueStart;
          value.len = i - valueStart;
          found = true;
        }
        i = skipSpace(json, len, i);
        if (i >= len) return false;
        if (json[i] == '}') {
          i++;
          break;
        }
        if (json[i] != ',') return false;
        i = skipSpace(json, len, i + 1);
      }
    }
    // Nothing but white space may follow the object.
    return skipSpace(json, len, i) == len && found;
  }

  static bool isString(const HyperTCPJsonSpan& v) { return v.len >= 2 && v.ptr[0] == '"'; }
  static bool isObject(const HyperTCPJsonSpan& v) { return v.len >= 2 && v.ptr[0] == '{'; }
  static bool isTrue(const HyperTCPJsonSpan& v) { return v.len == 4 && memcmp(v.ptr, "true", 4) == 0; }

  // True if `v` is a string whose decoded text equals `s`.
  static bool equals(const HyperTCPJsonSpan& v, const char* s) {
    return s != nullptr && isString(v) && stringEquals(v.ptr, v.len, s);
  }

  // Decodes string value `v` into `out` (NUL-terminated, UTF-8).  Fails if
  // `v` is not a string, holds an invalid escape or a \u0000, or does not
  // fit in outSize bytes.  `out` may be v.ptr itself: decoding never writes
  // ahead of what it has read (an escape is always longer than the bytes it
  // stands for), so a string can be decoded in place.
  static bool getString(const HyperTCPJsonSpan& v, char* out, size_t outSize) {
    if (!isString(v) || v.ptr[v.len - 1] != '"' || out == nullptr || outSize == 0) return false;
    const char* s = v.ptr + 1;
    const size_t n = v.len - 2;
    size_t w = 0;
    size_t i = 0;
    while (i < n) {
      char bytes[4];
      size_t count;
      if (s[i] != '\\') {
        bytes[0] = s[i++];  // plain bytes, UTF-8 included, pass through
        count = 1;
      } else {
        uint32_t cp = 0;
        if (!nextChar(s, n, i, cp) || cp == 0) return false;
        count = encodeUtf8(cp, bytes);
      }
      if (w + count >= outSize) return false;  // keep a byte for the NUL
      for (size_t k = 0; k < count; k++) out[w++] = bytes[k];
    }
    out[w] = '\0';
    return true;
  }

  // Reads a non-negative integer value (no sign, fraction or exponent).
  static bool getUint(const HyperTCPJsonSpan& v, uint32_t& out) {
    if (v.len == 0 || v.len > 10) return false;
    uint64_t value = 0;
    for (size_t i = 0; i < v.len; i++) {
      char c = v.ptr[i];
      if (c < '0' || c > '9') return false;
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    if (value > 0xFFFFFFFFULL) return false;
    out = static_cast<uint32_t>(value);
    return true;
  }

 private:
  static const uint8_t kMaxDepth = 32;  // nesting levels skipValue() accepts

  static bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

  static size_t skipSpace(const char* s, size_t n, size_t i) {
    while (i < n && isSpace(s[i])) i++;
    return i;
  }

  // s[i] is the opening quote.  Leaves i just past the closing quote.
  static bool skipString(const char* s, size_t n, size_t& i) {
    for (i++; i < n; i++) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == '\\') {
        i++;  // the escaped byte; whether it is a valid escape is checked on decode
      } else if (c == '"') {
        i++;
        return true;
      } else if (c < 0x20) {
        return false;  // raw control characters are not allowed in JSON strings
      }
    }
    return false;
  }

  // Skips one value starting at s[i]; leaves i just past it.
  static bool skipValue(const char* s, size_t n, size_t& i) {
    if (i >= n) return false;
    char c = s[i];
    if (c == '"') return skipString(s, n, i);
    if (c == '{' || c == '[') {
      // One bit per open container: 1 = object, 0 = array, so the closing
      // bracket can be checked against the opening one.
      uint32_t kinds = 0;
      uint8_t depth = 0;
      while (i < n) {
        c = s[i];
        if (c == '"') {
          if (!skipString(s, n, i)) return false;
          continue;
        }
        if (c == '{' || c == '[') {
          if (depth == kMaxDepth) return false;
          kinds = (kinds << 1) | (c == '{' ? 1u : 0u);
          depth++;
        } else if (c == '}' || c == ']') {
          if (depth == 0 || (kinds & 1u) != (c == '}' ? 1u : 0u)) return false;
          kinds >>= 1;
          depth--;
          if (depth == 0) {
            i++;
            return true;
          }
        }
        i++;
      }
      return false;
    }
    // A number or a literal (true, false, null): runs to the next delimiter.
    if (c == '\0' || strchr("-0123456789tfn", c) == nullptr) return false;
    size_t start = i;
    while (i < n) {
      c = s[i];
      bool word = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-' || c == '+' || c == '.';
      if (!word) break;
      i++;
    }
    return i > start;
  }

  static bool hex4(const char* s, size_t n, size_t i, uint32_t& out) {
    if (n < 4 || i > n - 4) return false;
    out = 0;
    for (size_t k = 0; k < 4; k++) {
      char c = s[i + k];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
      out = (out << 4) | d;
    }
    return true;
  }

  // Reads one character of string content s[i..n) (quotes excluded) and
  // advances i.  A plain byte comes back as itself (UTF-8 passes through
  // byte by byte); an escape comes back as its code point.
  static bool nextChar(const char* s, size_t n, size_t& i, uint32_t& cp) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c != '\\') {
      cp = c;
      i++;
      return true;
    }
    if (i + 1 >= n) return false;
    char e = s[i + 1];
    i += 2;
    switch (e) {
      case '"': cp = '"'; return true;
      case '\\': cp = '\\'; return true;
      case '/': cp = '/'; return true;
      case 'b': cp = '\b'; return true;
      case 'f': cp = '\f'; return true;
      case 'n': cp = '\n'; return true;
      case 'r': cp = '\r'; return true;
      case 't': cp = '\t'; return true;
      case 'u': break;
      default: return false;
    }
    if (!hex4(s, n, i, cp)) return false;
    i += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a lone low surrogate
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      // A high surrogate must be followed by an escaped low one.
      uint32_t low;
      if (i + 1 >= n || s[i] != '\\' || s[i + 1] != 'u' || !hex4(s, n, i + 2, low)) return false;
      if (low < 0xDC00 || low > 0xDFFF) return false;
      i += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    return true;
  }

  // A code point from an escape, as UTF-8.
  static size_t encodeUtf8(uint32_t cp, char* out) {
    if (cp < 0x80) {
      out[0] = static_cast<char>(cp);
      return 1;
    }
    if (cp < 0x800) {
      out[0] = static_cast<char>(0xC0 | (cp >> 6));
      out[1] = static_cast<char>(0x80 | (cp & 0x3F));
      return 2;
    }
    if (cp < 0x10000) {
      out[0] = static_cast<char>(0xE0 | (cp >> 12));
      out[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out[2] = static_cast<char>(0x80 | (cp & 0x3F));
      return 3;
    }
    out[0] = static_cast<char>(0xF0 | (cp >> 18));
    out[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out[3] = static_cast<char>(0x80 | (cp & 0x3F));
    return 4;
  }

  // Compares the string token tok[0..len) (quotes included) with `s`,
  // decoding escapes on the fly.  Only ASCII escapes can match; keys in this
  // protocol are ASCII.
  static bool stringEquals(const char* tok, size_t len, const char* s) {
    if (len < 2) return false;
    const char* body = tok + 1;
    const size_t n = len - 2;
    size_t i = 0;
    size_t k = 0;
    while (i < n) {
      bool escaped = body[i] == '\\';
      uint32_t cp;
      if (!nextChar(body, n, i, cp)) return false;
      if (escaped && cp >= 0x80) return false;
      if (s[k] == '\0' || static_cast<uint32_t>(static_cast<unsigned char>(s[k])) != cp) return false;
      k++;
    }
    return s[k] == '\0';
  }
};

#endif  // HYPERTCP_JSON_H
