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
//     transmit buffer, the token, device id and host names.  Nothing is allocated per
//     message.  A received frame larger than the receive buffer is skipped
//     byte-exactly and reported through onOversizeFrame(); the stream stays
//     in sync.
//   * The link is kept alive per instance (PING every heartbeat interval),
//     a silent server is detected, and the library reconnects on its own
//     with capped exponential backoff and jitter, logging in again with the
//     same token (a JSON LOGIN at protocol level 2, so the server sends it
//     every status; or a challenge login that keeps the token off the wire).
//   * User hooks are only ever called from inside run(), never from a send.
//
// JSON: the core API takes and hands out JSON text (const char*, length), so
// the library needs no JSON library.  When ArduinoJson is available (include
// <ArduinoJson.h> before this header), the JsonObject overloads of the
// original sketch API are compiled in as well.
//
// Sketches include this header only.  The pieces behind it:
//   HyperTCPConfig.h     build-time settings (buffer sizes, timers)
//   HyperTCPWire.h       command and status numbers, the header size
//   HyperTCPJson.h       the JSON scanner the library (and sketches) read with
//   HyperTCPFrames.h     frame reader and writer on fixed buffers
//   HyperTCPTransport.h  the byte pipe over an Arduino Client
//   HyperTCPSha256.h     SHA-256 and HMAC for the challenge login
//   this file            login, keepalive, reconnect, redirect, dispatch

#ifndef HYPERTCP_PROTOCOL_H
#define HYPERTCP_PROTOCOL_H

#include "HyperTCPConfig.h"
#include "HyperTCPFrames.h"
#include "HyperTCPJson.h"
#include "HyperTCPSha256.h"
#include "HyperTCPTransport.h"
#include "HyperTCPWire.h"

// HyperTCPProtocol: login, keepalive, reconnect, framing and dispatch.

template <typename TransportT>
class HyperTCPProtocol {
 public:
  explicit HyperTCPProtocol(TransportT& byteLink)
      : _transport(byteLink),
        _prove(nullptr),
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
        _homePort(0),
        _redirectPort(0),
        _nextId(0),
        _pingId(0),
        _loginId(0),
        _state(STOPPED),
        _deliveryStatus(HYPER_TCP_STATUS_SUCCESS),
        _attempts(0),
        _useRedirect(false),
        _writeFailed(false) {
    _token[0] = '\0';
    _deviceId[0] = '\0';
    _homeHost[0] = '\0';
    _redirectHost[0] = '\0';
    setHeartbeat(HYPERTCP_HEARTBEAT_MS);
    setReconnectDelay(HYPERTCP_RECONNECT_MIN_MS, HYPERTCP_RECONNECT_MAX_MS);
  }

  virtual ~HyperTCPProtocol() {}

  // Remembers the token and server, opens the link and sends LOGIN.  The
  // login result arrives later, in run() (onConnected / onLoginFailed).
  // Returns false if the arguments are unusable (nothing will happen) or the
  // first TCP connect failed (run() keeps retrying).  (The original header's
  // connect() waited for the login answer; this one never blocks on it.)
  bool connect(const char* token, const char* host, uint16_t port) {
    if (token == nullptr || host == nullptr || port == 0) return false;
    size_t tokenLen = strlen(token);
    size_t hostLen = strlen(host);
    if (tokenLen == 0 || tokenLen > HYPERTCP_MAX_TOKEN_LEN || hostLen == 0 ||
        hostLen > HYPERTCP_MAX_HOST_LEN || !loginFits(token, _deviceId)) {
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

  // The device id to log in as, for tokens that let the device choose its
  // own (fleet tokens); nullptr or "" to let the token decide.  Applies
  // from the next login.  False (and no change) if it is longer than
  // HYPERTCP_MAX_DEVICE_ID_LEN or the LOGIN would not fit the transmit
  // buffer.
  bool setDeviceId(const char* id) {
    const size_t len = id == nullptr ? 0 : strlen(id);
    if (len > HYPERTCP_MAX_DEVICE_ID_LEN || (len > 0 && !loginFits(_token, id))) return false;
    memcpy(_deviceId, len == 0 ? "" : id, len + 1);
    return true;
  }

  // The original header's defaults, for sketches written for it: port 80
  // when none is named, and the address given to the transport's begin()
  // when no host is named (false if there is none).
  HYPERTCP_DEPRECATED("name the port: connect(token, host, port); this one uses port 80")
  bool connect(const char* token, const char* host) { return connect(token, host, 80); }
  HYPERTCP_DEPRECATED("name the server: connect(token, host, port) instead of transport.begin()")
  bool connect(const char* token) {
    char host[HYPERTCP_MAX_HOST_LEN + 1];
    uint16_t port = 0;
    return _transport.address(host, sizeof host, port) && connect(token, host, port);
  }

  // Log in without the token crossing the wire: the server sends a nonce
  // and the device answers with a proof computed from the token (the
  // construction is in docs/protocol.rst).  Applies from the next login.
  // The server must support it: one that does not refuses the login.  The
  // SHA-256 code this needs is only in sketches that call this.
  void useChallengeLogin(bool on = true) { _prove = on ? &HyperTCPProtocol::writeProof : nullptr; }

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
  //
  // Returns false when the library is not trying to be online: before
  // connect(), after disconnect() (also from a hook), or after connect()
  // was given unusable arguments.  While it is logged in, logging in, or
  // waiting to reconnect, it returns true: reconnecting is its job, so a
  // sketch that calls connect() again when run() returns false (as sketches
  // for the original header do) does not fight it.
  bool run() {
    if (_state == STOPPED) return false;
    if (_state == WAITING) {
      if (millis() - _since >= _waitMs) openLink();
      return true;
    }
    receive();
    if (_state == LOGGING_IN || _state == ONLINE) {
      if (_writeFailed || !_transport.connected()) {
        linkLost();
      } else {
        keepAlive(millis());
      }
    }
    return _state != STOPPED;
  }

  // True while logged in.
  bool connected() const { return _state == ONLINE; }

  // Sends a JSON_MESSAGE `{"targetId":target,"payload":json}`; `json` must be
  // a JSON object.  Returns the frame's msg_id (matched by onResponse()), or
  // 0 if nothing was sent: not logged in, frame larger than the transmit
  // buffer, the write failed, or `json` is shorter than "{}".
  uint16_t sendMessage(const char* target, const char* json) {
    return json == nullptr ? 0 : sendMessage(target, json, strlen(json));
  }
  uint16_t sendMessage(const char* target, const char* json, size_t len) {
    return sendJson(HYPER_TCP_CMD_JSON_MESSAGE, target, json, len, HYPER_TCP_QOS_0);
  }
  // With HYPER_TCP_QOS_1 the envelope carries "qos":1: a server that stores
  // messages keeps it for a target that is offline and answers STORED (202)
  // through onResponse(), then delivers it when the target logs in.
  // (Pass the enum: a plain number here would be taken as a length.)
  uint16_t sendMessage(const char* target, const char* json, HyperTCPQos qos) {
    return json == nullptr ? 0 : sendMessage(target, json, strlen(json), qos);
  }
  uint16_t sendMessage(const char* target, const char* json, size_t len, HyperTCPQos qos) {
    return sendJson(HYPER_TCP_CMD_JSON_MESSAGE, target, json, len, qos);
  }

  // Sends a BROADCAST to every other connected client.
  uint16_t broadcastMessage(const char* json) {
    return json == nullptr ? 0 : broadcastMessage(json, strlen(json));
  }
  uint16_t broadcastMessage(const char* json, size_t len) {
    return sendJson(HYPER_TCP_CMD_BROADCAST, "broadcast", json, len, HYPER_TCP_QOS_0);
  }

  // Sends a JSON_MESSAGE to the server itself, e.g. {"command":"ping",...}.
  uint16_t sendToServer(const char* json) { return sendMessage("server", json); }
  uint16_t sendToServer(const char* json, size_t len) { return sendMessage("server", json, len); }

#if HYPERTCP_HAS_ARDUINOJSON
  uint16_t sendMessage(const char* target, JsonObject payload, HyperTCPQos qos = HYPER_TCP_QOS_0) {
    return sendJsonObject(HYPER_TCP_CMD_JSON_MESSAGE, target, payload, qos);
  }
  uint16_t broadcastMessage(JsonObject payload) {
    return sendJsonObject(HYPER_TCP_CMD_BROADCAST, "broadcast", payload, HYPER_TCP_QOS_0);
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
  // The original API's hooks, called by the default text hooks.
  virtual void onMessageReceived(const char* from, JsonObject& payload) {
    (void)from;
    (void)payload;
  }
  virtual void onBroadcastMessage(const char* from, JsonObject& payload) {
    (void)from;
    (void)payload;
  }
  // A delivered payload ArduinoJson could not turn into a JsonObject, so
  // neither hook above is called: NoMemory when it does not fit the
  // document (HYPERTCP_JSON_DOC_SIZE bytes with ArduinoJson 6; the heap with
  // 7), TooDeep past ArduinoJson's nesting limit.  `json` is the payload
  // text, readable with HyperTCPJson.  The frame is answered with status 11
  // instead of SUCCESS, so a sender that asked for acknowledgement learns
  // that the device did not take it.
  virtual void onJsonError(const char* from, const char* json, size_t len, bool broadcast,
                           DeserializationError error) {
    (void)from;
    (void)json;
    (void)len;
    (void)broadcast;
    (void)error;
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
    if (_prove != nullptr) {
      _tx.begin();
      _tx.append("{\"proto\":" HYPER_TCP_PROTO_TEXT ",\"challenge\":true}");
    } else {
      buildLogin(_token, _deviceId);
    }
    _loginId = txSend(HYPER_TCP_CMD_LOGIN);
    if (_loginId == 0) {
      linkLost();
      return false;
    }
    return true;
  }

  // LOGIN: {"token":"...","proto":2[,"device_id":"..."]}.  "proto" tells
  // the server that this client reads the status byte of every RESPONSE
  // (a device that logs in with a raw token, as the original sketch does,
  // is only ever sent empty RESPONSEs after its login answer).
  void buildLogin(const char* token, const char* deviceId) {
    _tx.begin();
    _tx.append("{\"token\":\"");
    _tx.appendEscaped(token);
    _tx.append("\",\"proto\":" HYPER_TCP_PROTO_TEXT);
    if (deviceId[0] != '\0') {
      _tx.append(",\"device_id\":\"");
      _tx.appendEscaped(deviceId);
      _tx.append("\"");
    }
    _tx.append("}");
  }

  // Whether that LOGIN fits the transmit buffer (escapes make it longer
  // than the strings).  The writer is free between sends.
  bool loginFits(const char* token, const char* deviceId) {
    buildLogin(token, deviceId);
    return !_tx.overflowed();
  }

  // Closes the transport and forgets any partial frame.  Returns whether the
  // link was logged in.  Calls no hook.
  bool closeLink() {
    bool wasOnline = _state == ONLINE;
    if (_state == LOGGING_IN || _state == ONLINE) _transport.stop();
    _generation++;
    _rx.reset();
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
      _tx.begin();
      _pingId = txSend(HYPER_TCP_CMD_PING);
    }
  }

  // ---- Receiving

  // Reads what is available, up to the budget, through the frame reader.
  // Stops early if a frame handler closed or replaced the link.
  void receive() {
    const uint32_t generation = _generation;
    size_t budget = HYPERTCP_READ_BUDGET;
    while (budget > 0 && generation == _generation && !_writeFailed) {
      int avail = _transport.available();
      if (avail <= 0) break;
      size_t want;
      uint8_t* dst = _rx.space(want);
      if (want > static_cast<size_t>(avail)) want = static_cast<size_t>(avail);
      if (want > budget) want = budget;
      int got = _transport.read(dst, want);
      if (got <= 0) break;
      if (static_cast<size_t>(got) > want) got = static_cast<int>(want);  // defensive
      budget -= static_cast<size_t>(got);
      _lastRx = millis();
      const uint8_t event = _rx.consumed(static_cast<size_t>(got));
      if (event & HyperTCPFrameReader::HEADER) {
        onFrame(_rx.type(), _rx.msgId(), _rx.length());
        if (generation != _generation) return;  // the hook closed the link
        if (_rx.skipping()) {
          // Too big to hold: skipped byte-exactly; say so.
          if (_rx.type() != HYPER_TCP_CMD_RESPONSE) {
            sendResponse(_rx.msgId(), HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
          }
          onOversizeFrame(_rx.type(), _rx.msgId(), _rx.length());
        }
      }
      // The reader is already waiting for the next header, so handlers may
      // do anything.
      if (event & HyperTCPFrameReader::FRAME) dispatch();
    }
  }

  // A whole frame is in the reader.
  void dispatch() {
    const uint16_t msgId = _rx.msgId();
    switch (_rx.type()) {
      case HYPER_TCP_CMD_RESPONSE: {
        const uint8_t status = _rx.length() == 0 ? static_cast<uint8_t>(HYPER_TCP_STATUS_SUCCESS)
                                                 : static_cast<uint8_t>(_rx.payload()[0]);
        if (_state == LOGGING_IN) {
          if (msgId == _loginId) loginAnswered(status);
        } else if (msgId != _pingId) {            // our heartbeat's answer is ours
          onResponse(msgId, status);
        }
        return;
      }
      case HYPER_TCP_CMD_PING:
        sendResponse(msgId, HYPER_TCP_STATUS_SUCCESS);
        return;
      case HYPER_TCP_CMD_JSON_MESSAGE:
      case HYPER_TCP_CMD_BROADCAST:
        deliver();
        return;
      case HYPER_TCP_CMD_REDIRECT:
        redirect();
        return;
      case HYPER_TCP_CMD_LOGIN:
        // The server's challenge, echoing the first LOGIN of a challenge
        // login; anything else is a command a server does not send.
        if (_state == LOGGING_IN && _prove != nullptr && msgId == 1 && _loginId == 1) {
          challenged();
          return;
        }
        sendResponse(msgId, HYPER_TCP_STATUS_ILLEGAL_COMMAND);
        return;
      default:
        sendResponse(msgId, HYPER_TCP_STATUS_ILLEGAL_COMMAND);
        return;
    }
  }

  // {"from": S, "payload": {...}}: hand to the hooks, then acknowledge.
  // The answer comes after the hook (as in the original header), so that a
  // payload the hooks could not take is answered with a status instead of
  // SUCCESS; a hook that closed the link answers nothing.
  void deliver() {
    const uint16_t msgId = _rx.msgId();
    if (_state != ONLINE) {
      sendResponse(msgId, HYPER_TCP_STATUS_NOT_AUTHENTICATED);
      return;
    }
    char* text = _rx.payload();
    HyperTCPJsonSpan from;
    HyperTCPJsonSpan payload;
    // A NUL byte in the payload would cut the hooks' text short (the
    // scanner does not look inside nested values; JSON has no raw NUL).
    if (!HyperTCPJson::find(text, _rx.length(), "from", from) ||
        !HyperTCPJson::find(text, _rx.length(), "payload", payload) ||
        !HyperTCPJson::isObject(payload) || !HyperTCPJson::isString(from) ||
        memchr(payload.ptr, '\0', payload.len) != nullptr) {
      sendResponse(msgId, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
      return;
    }
    // Decode the sender id in place and terminate the payload in place: the
    // two spans do not overlap, and at least one delimiter separates them.
    // (The spans point into the reader's buffer, which this object owns.)
    char* fromText = const_cast<char*>(from.ptr);
    if (!HyperTCPJson::getString(from, fromText, from.len)) {
      sendResponse(msgId, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
      return;
    }
    char* json = const_cast<char*>(payload.ptr);
    json[payload.len] = '\0';
    const uint32_t generation = _generation;
    _deliveryStatus = HYPER_TCP_STATUS_SUCCESS;
    if (_rx.type() == HYPER_TCP_CMD_BROADCAST) {
      onBroadcastText(fromText, json, payload.len);
    } else {
      onMessageText(fromText, json, payload.len);
    }
    if (generation == _generation) sendResponse(msgId, _deliveryStatus);
  }

  // {"server": "host", "port": 8080, "tls": true?}: close, connect there.
  void redirect() {
    const char* text = _rx.payload();
    const size_t len = _rx.length();
    HyperTCPJsonSpan server;
    HyperTCPJsonSpan port;
    HyperTCPJsonSpan tls;
    uint32_t portNumber = 0;
    if (!HyperTCPJson::find(text, len, "server", server) ||
        !HyperTCPJson::find(text, len, "port", port) || !HyperTCPJson::getUint(port, portNumber) ||
        portNumber == 0 || portNumber > 65535) {
      return;  // unusable: stay where we are
    }
    bool wantsTls = HyperTCPJson::find(text, len, "tls", tls) && HyperTCPJson::isTrue(tls);
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

  // {"nonce": "<64 lowercase hex>"}: answer with the proof, as a second
  // LOGIN whose RESPONSE is the login answer.  A challenge without a usable
  // nonce fails the login like a refusal.
  void challenged() {
    HyperTCPJsonSpan nonce;
    if (!HyperTCPJson::find(_rx.payload(), _rx.length(), "nonce", nonce) || nonce.len != 2 + 64) {
      loginAnswered(HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
      return;
    }
    const char* hex = nonce.ptr + 1;
    for (size_t i = 0; i < 64; i++) {
      if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'))) {
        loginAnswered(HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
        return;
      }
    }
    (this->*_prove)(hex);
    _loginId = txSend(HYPER_TCP_CMD_LOGIN);
    // Not sent: too big for the transmit buffer, or the write failed (then
    // run() closes the link anyway).
    if (_loginId == 0 && !_writeFailed) loginAnswered(HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
  }

  // The second LOGIN of a challenge login, in the writer:
  // {"proto":2,"key":K,"proof":P[,"device_id":...]} where
  //   K               = the first 16 hex digits of SHA-256(token)
  //   ClientKey       = HMAC-SHA256(token, "HyperTCP client key")
  //   StoredKey       = SHA-256(ClientKey)
  //   ClientSignature = HMAC-SHA256(StoredKey, nonce ":" device_id)
  //   P               = hex(ClientKey XOR ClientSignature)
  void writeProof(const char* nonceHex) {
    static const char label[] = "HyperTCP client key";
    const size_t tokenLen = strlen(_token);
    uint8_t key[HyperTCPSha256::kDigestSize];
    uint8_t clientKey[HyperTCPSha256::kDigestSize];
    uint8_t signature[HyperTCPSha256::kDigestSize];
    HyperTCPSha256::hash(_token, tokenLen, key);
    _tx.begin();
    _tx.append("{\"proto\":" HYPER_TCP_PROTO_TEXT ",\"key\":\"");
    appendHex(key, 8);
    HyperTCPHmacSha256::mac(_token, tokenLen, label, sizeof label - 1, clientKey);
    HyperTCPSha256::hash(clientKey, sizeof clientKey, key);  // StoredKey
    HyperTCPHmacSha256 hmac(key, sizeof key);
    hmac.update(nonceHex, 64);
    hmac.update(":", 1);
    hmac.update(_deviceId, strlen(_deviceId));
    hmac.finish(signature);
    for (size_t i = 0; i < sizeof signature; i++) signature[i] ^= clientKey[i];
    _tx.append("\",\"proof\":\"");
    appendHex(signature, sizeof signature);
    _tx.append("\"");
    if (_deviceId[0] != '\0') {
      _tx.append(",\"device_id\":\"");
      _tx.appendEscaped(_deviceId);
      _tx.append("\"");
    }
    _tx.append("}");
  }

  void appendHex(const uint8_t* bytes, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
      const char pair[2] = {digits[bytes[i] >> 4], digits[bytes[i] & 0xF]};
      _tx.append(pair, 2);
    }
  }

#if HYPERTCP_HAS_ARDUINOJSON
  // The default text hooks: the payload as a JsonObject for the original
  // API's hooks, or onJsonError() and status 11 when it cannot be one.
  void deliverJsonObject(const char* from, const char* json, size_t len, bool broadcast) {
#if ARDUINOJSON_VERSION_MAJOR >= 7
    JsonDocument doc;  // ArduinoJson 7 always allocates; use the text hooks to avoid it
#else
    StaticJsonDocument<HYPERTCP_JSON_DOC_SIZE> doc;
#endif
    // `json` is const here, so ArduinoJson copies its strings and the text
    // stays intact for onJsonError().
    DeserializationError error = deserializeJson(doc, json, len);
    JsonObject object = doc.as<JsonObject>();
    if (!error && object.isNull()) error = DeserializationError::InvalidInput;
    if (error) {
      _deliveryStatus = HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY;
      onJsonError(from, json, len, broadcast, error);
    } else if (broadcast) {
      onBroadcastMessage(from, object);
    } else {
      onMessageReceived(from, object);
    }
  }

  uint16_t sendJsonObject(uint8_t type, const char* target, JsonObject payload, HyperTCPQos qos) {
    if (!canSend() || target == nullptr || payload.isNull()) return 0;
    envelope(target);
    const size_t size = measureJson(payload);
    size_t room;
    char* out = _tx.tail(room);
    // serializeJson may add a NUL after the text; leave it room.
    if (size + 2 > room || serializeJson(payload, out, size + 1) != size) return 0;
    _tx.commit(size);
    closeEnvelope(qos);
    return txSend(type);
  }
#endif

  // ---- Sending.  A frame is assembled in the writer and written with one
  // write() call, so it leaves as one piece and a failed write never leaves
  // half a frame queued behind the next one.  Sends never call hooks: a
  // failed write only marks the link, and run() closes it.

  bool canSend() const { return _state == ONLINE && !_writeFailed; }

  // Starts a message: {"targetId":"<target>","payload":
  void envelope(const char* target) {
    _tx.begin();
    _tx.append("{\"targetId\":\"");
    _tx.appendEscaped(target);
    _tx.append("\",\"payload\":");
  }

  // ...}, with "qos":1 when asked for (and nothing for qos 0, as before).
  void closeEnvelope(HyperTCPQos qos) { _tx.append(qos == HYPER_TCP_QOS_1 ? ",\"qos\":1}" : "}"); }

  uint16_t sendJson(uint8_t type, const char* target, const char* json, size_t len, HyperTCPQos qos) {
    if (!canSend() || target == nullptr || json == nullptr || len < 2) return 0;
    envelope(target);
    _tx.append(json, len);
    closeEnvelope(qos);
    return txSend(type);
  }

  void sendResponse(uint16_t msgId, uint8_t status) {
    _tx.begin();
    if (status != HYPER_TCP_STATUS_SUCCESS) {
      char byte = static_cast<char>(status);
      _tx.append(&byte, 1);
    }
    txSend(HYPER_TCP_CMD_RESPONSE, msgId);
  }

  // Writes the frame in the writer.  msgId 0 means "the next one".  Returns
  // the msg_id sent, or 0.
  uint16_t txSend(uint8_t type, uint16_t msgId = 0) {
    if (_tx.overflowed() || _writeFailed || (_state != LOGGING_IN && _state != ONLINE)) return 0;
    if (msgId == 0) {
      _nextId = static_cast<uint16_t>(_nextId + 1);
      if (_nextId == 0) _nextId = 1;  // 0 is never sent: 65535 wraps to 1
      msgId = _nextId;
    }
    const size_t size = _tx.finish(type, msgId);
    if (!_transport.write(_tx.data(), size)) {
      _writeFailed = true;
      return 0;
    }
    _lastTx = millis();
    return msgId;
  }

  // ---- State.  Wider members first to keep padding small.

  TransportT& _transport;
  void (HyperTCPProtocol::*_prove)(const char* nonceHex);  // set by useChallengeLogin()
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
  uint16_t _homePort;
  uint16_t _redirectPort;
  uint16_t _nextId;  // last msg_id sent on this link
  uint16_t _pingId;  // msg_id of the last heartbeat PING
  uint16_t _loginId;  // msg_id of the LOGIN being answered
  State _state;
  uint8_t _deliveryStatus;  // how the delivery being handled will be answered
  uint8_t _attempts;  // failed attempts since the last login
  bool _useRedirect;
  bool _writeFailed;
  char _token[HYPERTCP_MAX_TOKEN_LEN + 1];
  char _deviceId[HYPERTCP_MAX_DEVICE_ID_LEN + 1];
  char _homeHost[HYPERTCP_MAX_HOST_LEN + 1];
  char _redirectHost[HYPERTCP_MAX_HOST_LEN + 1];
  HyperTCPFrameReader _rx;
  HyperTCPFrameWriter _tx;
};

#endif  // HYPERTCP_PROTOCOL_H
