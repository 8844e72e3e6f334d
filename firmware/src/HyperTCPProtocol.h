// HyperTCPProtocol.h - HyperTCP client for ESP32 and any Arduino Client.
//
// Header-only.  The wire contract is docs/protocol.rst (PROTOCOL.md, v1):
// every frame is a 5-byte big-endian header (type, msg_id, length) followed
// by `length` payload bytes.
//
// Design rules, because a device runs this for months:
//   * run() never waits for the network: it reads what available() reports,
//     feeds a small state machine, and returns.  The one call that can block
//     is the Client's own connect() (WiFiClient bounds it with its timeout).
//   * All memory is inside the object: a fixed receive buffer, a fixed
//     transmit buffer, the token and host names.  Nothing is allocated per
//     message.  A received frame larger than the receive buffer is skipped
//     byte-exactly and reported through onOversizeFrame(); the stream stays
//     in sync.
//   * The link is kept alive per instance (PING every heartbeat interval),
//     a silent server is detected, and the library reconnects on its own
//     with capped exponential backoff and jitter, logging in again with the
//     same token.
//   * User hooks are only ever called from inside run(), never from a send.
//
// JSON: the core API takes and hands out JSON text (const char*, length), so
// the library needs no JSON library.  When ArduinoJson is available (include
// <ArduinoJson.h> before this header), the JsonObject overloads of the
// original sketch API are compiled in as well.

#ifndef HYPERTCP_PROTOCOL_H
#define HYPERTCP_PROTOCOL_H

#include <Arduino.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(HYPERTCP_NO_ARDUINOJSON) && defined(__has_include)
#if __has_include(<ArduinoJson.h>)
#include <ArduinoJson.h>
#define HYPERTCP_HAS_ARDUINOJSON 1
#endif
#endif
#ifndef HYPERTCP_HAS_ARDUINOJSON
#define HYPERTCP_HAS_ARDUINOJSON 0
#endif

// ---------------------------------------------------------------------------
// Build-time configuration.  Define any of these before including the header
// (or with -D in build flags) to change them.

// Largest payload received, in bytes.  Larger frames are skipped.
#ifndef HYPERTCP_RX_BUFFER_SIZE
#define HYPERTCP_RX_BUFFER_SIZE 1024
#endif

// Largest frame sent, header included.  A send that does not fit fails
// (returns 0) and sends nothing.
#ifndef HYPERTCP_TX_BUFFER_SIZE
#define HYPERTCP_TX_BUFFER_SIZE 1024
#endif

// Longest token and host name kept for reconnecting.
#ifndef HYPERTCP_MAX_TOKEN_LEN
#define HYPERTCP_MAX_TOKEN_LEN 127
#endif
#ifndef HYPERTCP_MAX_HOST_LEN
#define HYPERTCP_MAX_HOST_LEN 63
#endif

// Most bytes one run() call reads before returning, so a flood of incoming
// frames cannot starve the rest of loop().
#ifndef HYPERTCP_READ_BUDGET
#define HYPERTCP_READ_BUDGET 2048
#endif

// Defaults for setHeartbeat() and setReconnectDelay().
#ifndef HYPERTCP_HEARTBEAT_MS
#define HYPERTCP_HEARTBEAT_MS 30000UL
#endif
#ifndef HYPERTCP_RECONNECT_MIN_MS
#define HYPERTCP_RECONNECT_MIN_MS 1000UL
#endif
#ifndef HYPERTCP_RECONNECT_MAX_MS
#define HYPERTCP_RECONNECT_MAX_MS 60000UL
#endif

// ArduinoJson 6 only: capacity of the StaticJsonDocument (on the stack) used
// to hand a received payload to onMessageReceived()/onBroadcastMessage().
#ifndef HYPERTCP_JSON_DOC_SIZE
#define HYPERTCP_JSON_DOC_SIZE 1024
#endif

static_assert(HYPERTCP_RX_BUFFER_SIZE >= 16 && HYPERTCP_RX_BUFFER_SIZE <= 65535,
              "HYPERTCP_RX_BUFFER_SIZE must be 16..65535");
static_assert(HYPERTCP_TX_BUFFER_SIZE >= 5 + HYPERTCP_MAX_TOKEN_LEN &&
                  HYPERTCP_TX_BUFFER_SIZE <= 5 + 65535,
              "HYPERTCP_TX_BUFFER_SIZE must hold a LOGIN frame and at most a 65535-byte payload");
static_assert(HYPERTCP_READ_BUDGET >= 1, "HYPERTCP_READ_BUDGET must be positive");

// ---------------------------------------------------------------------------
// Wire constants (names as in the original sketch).

enum : uint8_t {
  HYPER_TCP_CMD_RESPONSE = 0,
  HYPER_TCP_CMD_PING = 6,
  HYPER_TCP_CMD_LOGIN = 29,
  HYPER_TCP_CMD_JSON_MESSAGE = 30,
  HYPER_TCP_CMD_REDIRECT = 41,
  HYPER_TCP_CMD_BROADCAST = 50,
};

enum : uint8_t {
  HYPER_TCP_STATUS_SUCCESS = 200,
  HYPER_TCP_STATUS_QUOTA_LIMIT = 1,
  HYPER_TCP_STATUS_ILLEGAL_COMMAND = 2,
  HYPER_TCP_STATUS_NOT_AUTHENTICATED = 5,
  HYPER_TCP_STATUS_NOT_ALLOWED = 6,
  HYPER_TCP_STATUS_DEVICE_NOT_IN_NETWORK = 7,
  HYPER_TCP_STATUS_INVALID_TOKEN = 9,
  HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY = 11,
  HYPER_TCP_STATUS_TIMEOUT = 16,
  HYPER_TCP_STATUS_SERVER_EXCEPTION = 19,
};

static const size_t HYPER_TCP_HEADER_SIZE = 5;

// ---------------------------------------------------------------------------
// HyperTCPJson: a small scanner for JSON text, no allocation, no copies.
//
// It answers one question well: "what is the raw text of the value of
// top-level key K in this object?"  Values are returned as spans into the
// caller's text.  It checks the structure it walks (strings and their
// escapes, bracket nesting, the key/colon/comma layout of the top-level
// object) and refuses anything it cannot walk, rather than guessing.  It does
// not validate the grammar inside nested values; the server already did.

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

// ---------------------------------------------------------------------------
// HyperTCPTransport: the byte pipe, a thin template over any Arduino Client
// (WiFiClient, WiFiClientSecure for TLS, EthernetClient, ...).  The protocol
// only needs these six calls, so a custom transport can replace it.

template <typename ClientT>
class HyperTCPTransport {
 public:
  // (Parameter names here avoid common sketch globals such as `client`, so
  // -Wshadow stays quiet in user code.)
  explicit HyperTCPTransport(ClientT& netClient) : _client(netClient) {}

  bool connect(const char* host, uint16_t port) { return _client.connect(host, port) > 0; }
  bool connected() { return _client.connected(); }
  int available() { return _client.available(); }
  int read(uint8_t* buf, size_t size) { return _client.read(buf, size); }
  // True only if every byte was accepted: a short write breaks the framing.
  bool write(const uint8_t* buf, size_t size) { return _client.write(buf, size) == size; }
  void stop() { _client.stop(); }

  ClientT& client() { return _client; }

 private:
  ClientT& _client;
};

// ---------------------------------------------------------------------------
// HyperTCPProtocol: login, keepalive, reconnect, framing and dispatch.

template <typename TransportT>
class HyperTCPProtocol {
 public:
  explicit HyperTCPProtocol(TransportT& byteLink)
      : _transport(byteLink),
        _heartbeatMs(0),
        _timeoutMs(0),
        _reconnectMinMs(0),
        _reconnectMaxMs(0),
        _since(0),
        _waitMs(0),
        _lastRx(0),
        _lastTx(0),
        _lastPing(0),
        _generation(0),
        _txLen(0),
        _homePort(0),
        _redirectPort(0),
        _nextId(0),
        _pingId(0),
        _rxId(0),
        _rxLen(0),
        _rxPos(0),
        _state(STOPPED),
        _rxState(RX_HEADER),
        _rxType(0),
        _hdrLen(0),
        _attempts(0),
        _useRedirect(false),
        _writeFailed(false),
        _txOverflow(false) {
    _token[0] = '\0';
    _homeHost[0] = '\0';
    _redirectHost[0] = '\0';
    setHeartbeat(HYPERTCP_HEARTBEAT_MS);
    setReconnectDelay(HYPERTCP_RECONNECT_MIN_MS, HYPERTCP_RECONNECT_MAX_MS);
  }

  virtual ~HyperTCPProtocol() {}

  // Remembers the token and server, opens the link and sends LOGIN.  The
  // login result arrives later, in run() (onConnected / onLoginFailed).
  // Returns false if the arguments are unusable (nothing will happen) or the
  // first TCP connect failed (run() keeps retrying).
  bool connect(const char* token, const char* host, uint16_t port) {
    if (token == nullptr || host == nullptr || port == 0) return false;
    size_t tokenLen = strlen(token);
    size_t hostLen = strlen(host);
    if (tokenLen == 0 || tokenLen > HYPERTCP_MAX_TOKEN_LEN || hostLen == 0 ||
        hostLen > HYPERTCP_MAX_HOST_LEN) {
      return false;
    }
    disconnect();
    memcpy(_token, token, tokenLen + 1);
    memcpy(_homeHost, host, hostLen + 1);
    _homePort = port;
    _useRedirect = false;
    _attempts = 0;
    return openLink();
  }

  // Closes the link and stops reconnecting until the next connect().
  void disconnect() {
    bool wasOnline = closeLink();
    _state = STOPPED;
    if (wasOnline) onDisconnected();
  }

  // Call from loop(), often.  Handles whatever has arrived, sends the
  // heartbeat, and reconnects when it is time; it never waits for data.
  // The one call that can take long is a reconnect attempt's Client
  // connect(), bounded by the Client's own timeout.
  void run() {
    if (_state == STOPPED) return;
    if (_state == WAITING) {
      if (millis() - _since >= _waitMs) openLink();
      return;
    }
    receive();
    if (_state != LOGGING_IN && _state != ONLINE) return;  // a frame or hook changed it
    if (_writeFailed || !_transport.connected()) {
      linkLost();
      return;
    }
    keepAlive(millis());
  }

  // True while logged in.
  bool connected() const { return _state == ONLINE; }

  // Sends a JSON_MESSAGE `{"targetId":target,"payload":json}`; `json` must be
  // a JSON object.  Returns the frame's msg_id (matched by onResponse()), or
  // 0 if nothing was sent: not logged in, frame larger than the transmit
  // buffer, or the write failed.
  uint16_t sendMessage(const char* target, const char* json) {
    return json == nullptr ? 0 : sendMessage(target, json, strlen(json));
  }
  uint16_t sendMessage(const char* target, const char* json, size_t len) {
    return sendJson(HYPER_TCP_CMD_JSON_MESSAGE, target, json, len);
  }

  // Sends a BROADCAST to every other connected client.
  uint16_t broadcastMessage(const char* json) {
    return json == nullptr ? 0 : broadcastMessage(json, strlen(json));
  }
  uint16_t broadcastMessage(const char* json, size_t len) {
    return sendJson(HYPER_TCP_CMD_BROADCAST, "broadcast", json, len);
  }

  // Sends a JSON_MESSAGE to the server itself, e.g. {"command":"ping",...}.
  uint16_t sendToServer(const char* json) { return sendMessage("server", json); }
  uint16_t sendToServer(const char* json, size_t len) { return sendMessage("server", json, len); }

#if HYPERTCP_HAS_ARDUINOJSON
  uint16_t sendMessage(const char* target, JsonObject payload) {
    return sendJsonObject(HYPER_TCP_CMD_JSON_MESSAGE, target, payload);
  }
  uint16_t broadcastMessage(JsonObject payload) {
    return sendJsonObject(HYPER_TCP_CMD_BROADCAST, "broadcast", payload);
  }
  uint16_t sendToServer(JsonObject payload) { return sendMessage("server", payload); }
#endif

  // PING when the link has been quiet for intervalMs in either direction;
  // drop and reconnect when nothing has been received for timeoutMs (also
  // the time allowed for the LOGIN answer).  timeoutMs must exceed
  // intervalMs; 0 (or too small) means 1.5 x intervalMs.
  void setHeartbeat(uint32_t intervalMs, uint32_t timeoutMs = 0) {
    if (intervalMs < 2) intervalMs = 2;
    _heartbeatMs = intervalMs;
    _timeoutMs = timeoutMs > intervalMs ? timeoutMs : intervalMs + intervalMs / 2;
  }

  // Reconnect delays: the n-th failed attempt in a row waits about
  // minMs * 2^n, capped at maxMs, with random jitter (between half and all
  // of that), so a fleet does not reconnect in lockstep.  An invalid token
  // always waits maxMs.  Delays are capped at one day.
  void setReconnectDelay(uint32_t minMs, uint32_t maxMs) {
    const uint32_t oneDay = 24UL * 60 * 60 * 1000;  // keeps random()'s long argument in range
    if (maxMs > oneDay) maxMs = oneDay;
    if (minMs > maxMs) minMs = maxMs;
    if (minMs == 0) minMs = 1;
    _reconnectMinMs = minMs;
    _reconnectMaxMs = maxMs < minMs ? minMs : maxMs;
  }

  static size_t rxBufferSize() { return HYPERTCP_RX_BUFFER_SIZE; }
  static size_t txBufferSize() { return HYPERTCP_TX_BUFFER_SIZE; }

 protected:
  // ---- Hooks.  All are called from inside run() only.  Text arguments
  // point into the receive buffer: valid only during the call, and
  // NUL-terminated at `len` for convenience.

  // Logged in (first time and after every reconnect).
  virtual void onConnected() {}
  // The logged-in link ended (called once per onConnected()).
  virtual void onDisconnected() {}
  // The server refused LOGIN (status 9 = invalid token: the library then
  // waits the maximum reconnect delay).  Call disconnect() here to give up.
  virtual void onLoginFailed(uint8_t status) { (void)status; }

  // A JSON_MESSAGE delivered to this device: `json` is the payload object.
  // The default hands it to onMessageReceived() when ArduinoJson is present.
  virtual void onMessageText(const char* from, const char* json, size_t len) {
#if HYPERTCP_HAS_ARDUINOJSON
    deliverJsonObject(from, json, len, false);
#else
    (void)from;
    (void)json;
    (void)len;
#endif
  }
  // A BROADCAST delivered to this device.
  virtual void onBroadcastText(const char* from, const char* json, size_t len) {
#if HYPERTCP_HAS_ARDUINOJSON
    deliverJsonObject(from, json, len, true);
#else
    (void)from;
    (void)json;
    (void)len;
#endif
  }

#if HYPERTCP_HAS_ARDUINOJSON
  virtual void onMessageReceived(const char* from, JsonObject& payload) {
    (void)from;
    (void)payload;
  }
  virtual void onBroadcastMessage(const char* from, JsonObject& payload) {
    (void)from;
    (void)payload;
  }
#endif

  // The server answered a frame this device sent (status 200 = success).
  virtual void onResponse(uint16_t msgId, uint8_t status) {
    (void)msgId;
    (void)status;
  }
  // A frame longer than HYPERTCP_RX_BUFFER_SIZE arrived; it is being
  // skipped, and (unless it was a RESPONSE) answered with status 11.
  virtual void onOversizeFrame(uint8_t type, uint16_t msgId, uint16_t length) {
    (void)type;
    (void)msgId;
    (void)length;
  }
  // The server asked the device to move.  Return false to stay.  The
  // transport does not change: with "tls":true, follow only if the Client is
  // a TLS client.  The redirect holds for one connection; after that link
  // ends the library goes back to the address given to connect(), which
  // may redirect again.
  virtual bool onRedirect(const char* host, uint16_t port, bool tls) {
    (void)host;
    (void)port;
    (void)tls;
    return true;
  }
  // Every frame header received, before the frame is handled (for tracing).
  virtual void onFrame(uint8_t type, uint16_t msgId, uint16_t length) {
    (void)type;
    (void)msgId;
    (void)length;
  }

 private:
  enum State : uint8_t { STOPPED, WAITING, LOGGING_IN, ONLINE };
  enum RxState : uint8_t { RX_HEADER, RX_PAYLOAD, RX_SKIP };

  // ---- Link management

  // Connects to the current address and sends LOGIN.  A new link starts its
  // msg_id sequence afresh, so LOGIN is always msg_id 1.
  bool openLink() {
    closeLink();
    const char* host = _useRedirect ? _redirectHost : _homeHost;
    uint16_t port = _useRedirect ? _redirectPort : _homePort;
    if (!_transport.connect(host, port)) {
      _transport.stop();  // release whatever the failed attempt holds
      linkLost();
      return false;
    }
    uint32_t now = millis();
    _state = LOGGING_IN;
    _since = _lastRx = _lastTx = _lastPing = now;
    _writeFailed = false;
    txBegin();
    txAppend(_token, strlen(_token));
    if (txSend(HYPER_TCP_CMD_LOGIN) == 0) {
      linkLost();
      return false;
    }
    return true;
  }

  // Closes the transport and forgets any partial frame.  Returns whether the
  // link was logged in.  Calls no hook.
  bool closeLink() {
    bool wasOnline = _state == ONLINE;
    if (_state == LOGGING_IN || _state == ONLINE) _transport.stop();
    _generation++;
    _rxState = RX_HEADER;
    _hdrLen = 0;
    _nextId = 0;
    _pingId = 0;
    _writeFailed = false;
    return wasOnline;
  }

  void waitThenReconnect(uint32_t delayMs) {
    _state = WAITING;
    _since = millis();
    _waitMs = delayMs;
  }

  // The next reconnect delay: min * 2^attempts, capped, jittered into
  // [d/2, d].
  uint32_t nextBackoff() {
    uint32_t delayMs = _reconnectMinMs;
    for (uint8_t k = 0; k < _attempts && delayMs < _reconnectMaxMs; k++) {
      delayMs = delayMs > _reconnectMaxMs / 2 ? _reconnectMaxMs : delayMs * 2;
    }
    if (delayMs > _reconnectMaxMs) delayMs = _reconnectMaxMs;
    if (_attempts < 255) _attempts++;
    uint32_t half = delayMs / 2;
    return delayMs - half + static_cast<uint32_t>(random(static_cast<long>(half) + 1));
  }

  // The link broke, timed out, or never came up: back off and retry at home.
  void linkLost() {
    bool wasOnline = closeLink();
    _useRedirect = false;
    waitThenReconnect(nextBackoff());
    if (wasOnline) onDisconnected();
  }

  void loginAnswered(uint8_t status) {
    if (status == HYPER_TCP_STATUS_SUCCESS) {
      _state = ONLINE;
      _attempts = 0;
      onConnected();
      return;
    }
    closeLink();
    _useRedirect = false;
    // A refused token will not become valid by asking again soon.
    waitThenReconnect(status == HYPER_TCP_STATUS_INVALID_TOKEN ? _reconnectMaxMs : nextBackoff());
    onLoginFailed(status);
  }

  void keepAlive(uint32_t now) {
    if (now - _lastRx >= _timeoutMs) {  // server silent (or no LOGIN answer)
      linkLost();
      return;
    }
    if (_state != ONLINE) return;
    bool quiet = now - _lastTx >= _heartbeatMs || now - _lastRx >= _heartbeatMs;
    if (quiet && now - _lastPing >= _heartbeatMs) {
      _lastPing = now;
      txBegin();
      _pingId = txSend(HYPER_TCP_CMD_PING);
    }
  }

  // ---- Receiving

  // Reads what is available, up to the budget, through the frame state
  // machine.  Stops early if a frame handler closed or replaced the link.
  void receive() {
    const uint32_t generation = _generation;
    size_t budget = HYPERTCP_READ_BUDGET;
    while (budget > 0 && generation == _generation && !_writeFailed) {
      int avail = _transport.available();
      if (avail <= 0) break;
      uint8_t* dst;
      size_t want;
      switch (_rxState) {
        case RX_HEADER:
          dst = _hdr + _hdrLen;
          want = HYPER_TCP_HEADER_SIZE - _hdrLen;
          break;
        case RX_PAYLOAD:
          dst = _rx + _rxPos;
          want = static_cast<size_t>(_rxLen - _rxPos);
          break;
        default:  // RX_SKIP: the receive buffer is scratch space
          dst = _rx;
          want = _rxLen - _rxPos;
          if (want > HYPERTCP_RX_BUFFER_SIZE) want = HYPERTCP_RX_BUFFER_SIZE;
          break;
      }
      if (want > static_cast<size_t>(avail)) want = static_cast<size_t>(avail);
      if (want > budget) want = budget;
      int got = _transport.read(dst, want);
      if (got <= 0) break;
      if (static_cast<size_t>(got) > want) got = static_cast<int>(want);  // defensive
      budget -= static_cast<size_t>(got);
      _lastRx = millis();
      consumed(static_cast<size_t>(got));
    }
  }

  // `count` bytes were read into the place receive() chose.
  void consumed(size_t count) {
    if (_rxState == RX_HEADER) {
      _hdrLen = static_cast<uint8_t>(_hdrLen + count);
      if (_hdrLen < HYPER_TCP_HEADER_SIZE) return;
      _hdrLen = 0;
      _rxType = _hdr[0];
      _rxId = static_cast<uint16_t>((_hdr[1] << 8) | _hdr[2]);
      _rxLen = static_cast<uint16_t>((_hdr[3] << 8) | _hdr[4]);
      _rxPos = 0;
      const uint32_t generation = _generation;
      onFrame(_rxType, _rxId, _rxLen);
      if (generation != _generation) return;  // the hook closed the link
      if (_rxLen > HYPERTCP_RX_BUFFER_SIZE) {
        // Too big to hold: skip it byte-exactly and say so.
        _rxState = RX_SKIP;
        if (_rxType != HYPER_TCP_CMD_RESPONSE) sendResponse(_rxId, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
        onOversizeFrame(_rxType, _rxId, _rxLen);
      } else if (_rxLen == 0) {
        _rx[0] = 0;
        dispatch();
      } else {
        _rxState = RX_PAYLOAD;
      }
      return;
    }
    _rxPos = static_cast<uint16_t>(_rxPos + count);
    if (_rxPos < _rxLen) return;
    if (_rxState == RX_SKIP) {
      _rxState = RX_HEADER;
      return;
    }
    _rxState = RX_HEADER;
    _rx[_rxLen] = 0;  // the buffer has one spare byte for this
    dispatch();
  }

  // A whole frame is in _rxType/_rxId/_rx[0.._rxLen).  The state machine is
  // already back at RX_HEADER, so handlers may do anything.
  void dispatch() {
    switch (_rxType) {
      case HYPER_TCP_CMD_RESPONSE: {
        uint8_t status = _rxLen == 0 ? static_cast<uint8_t>(HYPER_TCP_STATUS_SUCCESS) : _rx[0];
        if (_state == LOGGING_IN) {
          if (_rxId == 1) loginAnswered(status);  // LOGIN is always msg_id 1
        } else if (_rxId != _pingId) {            // our heartbeat's answer is ours
          onResponse(_rxId, status);
        }
        return;
      }
      case HYPER_TCP_CMD_PING:
        sendResponse(_rxId, HYPER_TCP_STATUS_SUCCESS);
        return;
      case HYPER_TCP_CMD_JSON_MESSAGE:
      case HYPER_TCP_CMD_BROADCAST:
        deliver();
        return;
      case HYPER_TCP_CMD_REDIRECT:
        redirect();
        return;
      default:
        sendResponse(_rxId, HYPER_TCP_STATUS_ILLEGAL_COMMAND);
        return;
    }
  }

  // {"from": S, "payload": {...}}: acknowledge, then hand to the hooks.
  void deliver() {
    if (_state != ONLINE) {
      sendResponse(_rxId, HYPER_TCP_STATUS_NOT_AUTHENTICATED);
      return;
    }
    char* text = reinterpret_cast<char*>(_rx);
    HyperTCPJsonSpan from;
    HyperTCPJsonSpan payload;
    if (!HyperTCPJson::find(text, _rxLen, "from", from) ||
        !HyperTCPJson::find(text, _rxLen, "payload", payload) || !HyperTCPJson::isObject(payload) ||
        !HyperTCPJson::isString(from)) {
      sendResponse(_rxId, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
      return;
    }
    // Decode the sender id in place and terminate the payload in place: the
    // two spans do not overlap, and at least one delimiter separates them.
    // (The spans point into _rx, which this object owns and may modify.)
    char* fromText = const_cast<char*>(from.ptr);
    if (!HyperTCPJson::getString(from, fromText, from.len)) {
      sendResponse(_rxId, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
      return;
    }
    char* json = const_cast<char*>(payload.ptr);
    json[payload.len] = '\0';
    sendResponse(_rxId, HYPER_TCP_STATUS_SUCCESS);
    if (_rxType == HYPER_TCP_CMD_BROADCAST) {
      onBroadcastText(fromText, json, payload.len);
    } else {
      onMessageText(fromText, json, payload.len);
    }
  }

  // {"server": "host", "port": 8080, "tls": true?}: close, connect there.
  void redirect() {
    char* text = reinterpret_cast<char*>(_rx);
    HyperTCPJsonSpan server;
    HyperTCPJsonSpan port;
    HyperTCPJsonSpan tls;
    uint32_t portNumber = 0;
    if (!HyperTCPJson::find(text, _rxLen, "server", server) ||
        !HyperTCPJson::find(text, _rxLen, "port", port) || !HyperTCPJson::getUint(port, portNumber) ||
        portNumber == 0 || portNumber > 65535) {
      return;  // unusable: stay where we are
    }
    bool wantsTls = HyperTCPJson::find(text, _rxLen, "tls", tls) && HyperTCPJson::isTrue(tls);
    char* host = const_cast<char*>(server.ptr);
    if (!HyperTCPJson::getString(server, host, server.len) || host[0] == '\0' ||
        strlen(host) > HYPERTCP_MAX_HOST_LEN) {
      return;
    }
    const uint16_t newPort = static_cast<uint16_t>(portNumber);
    if (!onRedirect(host, newPort, wantsTls)) return;
    memcpy(_redirectHost, host, strlen(host) + 1);
    _redirectPort = newPort;
    bool wasOnline = closeLink();
    _useRedirect = true;
    waitThenReconnect(0);  // connect on the next run()
    if (wasOnline) onDisconnected();
  }

#if HYPERTCP_HAS_ARDUINOJSON
  void deliverJsonObject(const char* from, const char* json, size_t len, bool broadcast) {
#if ARDUINOJSON_VERSION_MAJOR >= 7
    JsonDocument doc;  // ArduinoJson 7 always allocates; use the text hooks to avoid it
#else
    StaticJsonDocument<HYPERTCP_JSON_DOC_SIZE> doc;
#endif
    if (deserializeJson(doc, json, len)) return;
    JsonObject object = doc.as<JsonObject>();
    if (object.isNull()) return;
    if (broadcast) {
      onBroadcastMessage(from, object);
    } else {
      onMessageReceived(from, object);
    }
  }

  uint16_t sendJsonObject(uint8_t type, const char* target, JsonObject payload) {
    if (!canSend() || target == nullptr || payload.isNull()) return 0;
    txBegin();
    txAppend("{\"targetId\":\"");
    txAppendEscaped(target);
    txAppend("\",\"payload\":");
    size_t size = measureJson(payload);
    // serializeJson may add a NUL after the text; leave it room.
    if (_txOverflow || size + 2 > HYPERTCP_TX_BUFFER_SIZE - _txLen) return 0;
    if (serializeJson(payload, reinterpret_cast<char*>(_tx + _txLen), size + 1) != size) return 0;
    _txLen += size;
    txAppend("}");
    return txSend(type);
  }
#endif

  // ---- Sending.  A frame is assembled in _tx and written with one write()
  // call, so it leaves as one piece and a failed write never leaves half a
  // frame queued behind the next one.  Sends never call hooks: a failed
  // write only marks the link, and run() closes it.

  bool canSend() const { return _state == ONLINE && !_writeFailed; }

  uint16_t sendJson(uint8_t type, const char* target, const char* json, size_t len) {
    if (!canSend() || target == nullptr || json == nullptr || len == 0) return 0;
    txBegin();
    txAppend("{\"targetId\":\"");
    txAppendEscaped(target);
    txAppend("\",\"payload\":");
    txAppend(json, len);
    txAppend("}");
    return txSend(type);
  }

  void sendResponse(uint16_t msgId, uint8_t status) {
    txBegin();
    if (status != HYPER_TCP_STATUS_SUCCESS) {
      char byte = static_cast<char>(status);
      txAppend(&byte, 1);
    }
    txSend(HYPER_TCP_CMD_RESPONSE, msgId);
  }

  void txBegin() {
    _txLen = HYPER_TCP_HEADER_SIZE;
    _txOverflow = false;
  }

  void txAppend(const char* s) { txAppend(s, strlen(s)); }

  void txAppend(const char* s, size_t n) {
    if (_txOverflow || n > HYPERTCP_TX_BUFFER_SIZE - _txLen) {
      _txOverflow = true;
      return;
    }
    memcpy(_tx + _txLen, s, n);
    _txLen += n;
  }

  // Appends `s` as the inside of a JSON string.
  void txAppendEscaped(const char* s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s != '\0'; s++) {
      unsigned char c = static_cast<unsigned char>(*s);
      if (c == '"' || c == '\\') {
        char esc[2] = {'\\', static_cast<char>(c)};
        txAppend(esc, 2);
      } else if (c < 0x20) {
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
        txAppend(esc, 6);
      } else {
        txAppend(reinterpret_cast<const char*>(&c), 1);
      }
    }
  }

  // Fills in the header and writes the frame.  msgId 0 means "the next
  // one".  Returns the msg_id sent, or 0.
  uint16_t txSend(uint8_t type, uint16_t msgId = 0) {
    if (_txOverflow || _writeFailed || (_state != LOGGING_IN && _state != ONLINE)) return 0;
    if (msgId == 0) {
      _nextId = static_cast<uint16_t>(_nextId + 1);
      if (_nextId == 0) _nextId = 1;  // 0 is never sent: 65535 wraps to 1
      msgId = _nextId;
    }
    size_t payloadLen = _txLen - HYPER_TCP_HEADER_SIZE;
    _tx[0] = type;
    _tx[1] = static_cast<uint8_t>(msgId >> 8);
    _tx[2] = static_cast<uint8_t>(msgId & 0xFF);
    _tx[3] = static_cast<uint8_t>(payloadLen >> 8);
    _tx[4] = static_cast<uint8_t>(payloadLen & 0xFF);
    if (!_transport.write(_tx, _txLen)) {
      _writeFailed = true;
      return 0;
    }
    _lastTx = millis();
    return msgId;
  }

  // ---- State.  Wider members first to keep padding small.

  TransportT& _transport;
  uint32_t _heartbeatMs;
  uint32_t _timeoutMs;
  uint32_t _reconnectMinMs;
  uint32_t _reconnectMaxMs;
  uint32_t _since;   // when the current state began
  uint32_t _waitMs;  // WAITING: how long before the next attempt
  uint32_t _lastRx;  // last byte received
  uint32_t _lastTx;  // last frame sent
  uint32_t _lastPing;
  uint32_t _generation;  // bumped on every close, so receive() notices
  size_t _txLen;
  uint16_t _homePort;
  uint16_t _redirectPort;
  uint16_t _nextId;  // last msg_id sent on this link
  uint16_t _pingId;  // msg_id of the last heartbeat PING
  uint16_t _rxId;
  uint16_t _rxLen;
  uint16_t _rxPos;
  State _state;
  RxState _rxState;
  uint8_t _rxType;
  uint8_t _hdrLen;
  uint8_t _attempts;  // failed attempts since the last login
  bool _useRedirect;
  bool _writeFailed;
  bool _txOverflow;
  uint8_t _hdr[HYPER_TCP_HEADER_SIZE];
  char _token[HYPERTCP_MAX_TOKEN_LEN + 1];
  char _homeHost[HYPERTCP_MAX_HOST_LEN + 1];
  char _redirectHost[HYPERTCP_MAX_HOST_LEN + 1];
  uint8_t _rx[HYPERTCP_RX_BUFFER_SIZE + 1];  // +1: payloads are NUL-terminated
  uint8_t _tx[HYPERTCP_TX_BUFFER_SIZE];
};

#endif  // HYPERTCP_PROTOCOL_H
