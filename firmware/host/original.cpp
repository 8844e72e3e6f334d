// original: a device that reads the stream exactly as the ORIGINAL HyperTCP
// firmware header does (issue 10 describes it), for testing that the server
// keeps such devices online.  It does not use this project's library; it
// re-creates the original's behaviour, faults included:
//
//   * LOGIN carries the raw token, msg_id 1;
//   * the login answer is the first frame after LOGIN, whatever it is: only
//     a RESPONSE with msg_id 1 and a 1-byte payload of 200 counts as success;
//   * after login, a RESPONSE's 5-byte header is read and its payload never
//     is, so a status byte stays in the stream and becomes the first byte
//     of the next "header";
//   * PING is answered, and every JSON_MESSAGE and BROADCAST acknowledged,
//     with an empty RESPONSE; an unknown command's payload is skipped only
//     up to 256 bytes;
//   * every read is Arduino's Stream::readBytes() with its 1 s timeout per
//     byte; a header that does not arrive whole drops the connection, and the
//     original never reconnects;
//   * it pings the server every 30 s.
//
//   original --token T --host H --port P
//
// Events on stdout, one per line:          Commands on stdin, one per line:
//   login-ok | login-failed                  send TARGET JSON
//   response ID LENGTH   (the header read)   broadcast JSON
//   ping ID                                  flood COUNT TARGET JSON
//   message FROM JSON                        big SIZE TARGET  (a JSON_MESSAGE of SIZE bytes)
//   broadcast FROM JSON                      login            (LOGIN again, as connect() would)
//   redirect HOST PORT  (and it is stuck)    quit
//   frame TYPE ID LENGTH (any other header)
//   dropped              (run() failed; the original never reconnects)
//   sent | send-failed, flooded N

#include <Arduino.h>
#include <HyperTCPJson.h>
#include <HyperTCPWire.h>

#include <string>

#include "Console.h"
#include "PosixClient.h"

namespace {

// The original transport: a Client read through Stream::readBytes().
class StreamTransport {
 public:
  explicit StreamTransport(PosixClient& netClient) : _client(netClient) {}

  bool connect(const char* host, uint16_t port) { return _client.connect(host, port) == 1; }
  void disconnect() { _client.stop(); }
  int available() { return _client.available(); }
  bool connected() { return _client.connected() != 0; }

  // Stream::readBytes(): each byte waits up to the stream timeout (1 s).
  size_t read(void* buffer, size_t len) {
    uint8_t* out = static_cast<uint8_t*>(buffer);
    size_t n = 0;
    while (n < len) {
      int c = timedRead();
      if (c < 0) break;
      out[n++] = static_cast<uint8_t>(c);
    }
    return n;
  }

  size_t write(const void* buffer, size_t len) {
    return _client.write(static_cast<const uint8_t*>(buffer), len);
  }

 private:
  int timedRead() {
    const uint32_t start = millis();
    do {
      int c = _client.read();
      if (c >= 0) return c;
      delay(1);
    } while (millis() - start < kStreamTimeoutMs);
    return -1;
  }

  static const uint32_t kStreamTimeoutMs = 1000;  // Arduino Stream's default
  PosixClient& _client;
};

class OriginalProtocol {
 public:
  explicit OriginalProtocol(StreamTransport& transport)
      : _transport(transport), _authenticated(false), _msgId(0), _lastPing(0) {}

  // Blocks, as the original does: connect, LOGIN, wait for the answer.
  bool connect(const char* token, const char* host, uint16_t port) {
    _token = token;
    const uint32_t start = millis();
    while (millis() - start < 10000) {
      if (_transport.connect(host, port)) {
        if (sendCmd(HYPER_TCP_CMD_LOGIN, 1, token, strlen(token)) && waitForLoginResponse(5000)) {
          _authenticated = true;
          return true;
        }
        break;
      }
      delay(100);
    }
    return false;
  }

  bool authenticated() const { return _authenticated; }

  bool run() {
    if (!_authenticated) return false;
    while (_transport.available() > 0) {
      if (!processInput()) {
        _transport.disconnect();
        _authenticated = false;
        Serial.println("dropped");
        return false;
      }
      if (!_authenticated) return false;
    }
    if (millis() - _lastPing > 30000) {
      sendCmd(HYPER_TCP_CMD_PING, 0, nullptr, 0);
      _lastPing = millis();
    }
    return true;
  }

  bool sendMessage(const char* target, const char* json) {
    std::string body = std::string("{\"targetId\":\"") + target + "\",\"payload\":" + json + "}";
    return _authenticated && sendCmd(HYPER_TCP_CMD_JSON_MESSAGE, 0, body.data(), body.size());
  }
  bool broadcastMessage(const char* json) {
    std::string body = std::string("{\"targetId\":\"broadcast\",\"payload\":") + json + "}";
    return _authenticated && sendCmd(HYPER_TCP_CMD_BROADCAST, 0, body.data(), body.size());
  }
  // What connect() sends, on the connection that is already logged in.
  bool loginAgain() { return sendCmd(HYPER_TCP_CMD_LOGIN, 1, _token.data(), _token.size()); }

 private:
  // Header and payload in two writes, as the original does.
  bool sendCmd(uint8_t cmd, uint16_t id, const void* data, size_t length) {
    if (!_transport.connected()) return false;
    if (id == 0) {
      id = ++_msgId;
      if (_msgId == 0) _msgId = 1;
    }
    const uint8_t header[5] = {cmd, static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id & 0xFF),
                               static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length & 0xFF)};
    if (_transport.write(header, sizeof header) != sizeof header) return false;
    return data == nullptr || length == 0 || _transport.write(data, length) == length;
  }

  // The first frame after LOGIN is taken as its answer.
  bool waitForLoginResponse(uint32_t timeoutMs) {
    const uint32_t start = millis();
    while (millis() - start < timeoutMs) {
      if (_transport.available() >= 5) {
        uint8_t header[5];
        if (_transport.read(header, 5) == 5) {
          const uint16_t id = static_cast<uint16_t>((header[1] << 8) | header[2]);
          const uint16_t length = static_cast<uint16_t>((header[3] << 8) | header[4]);
          uint8_t status;
          if (header[0] == HYPER_TCP_CMD_RESPONSE && id == 1 && length == 1 &&
              _transport.read(&status, 1) == 1) {
            return status == HYPER_TCP_STATUS_SUCCESS;
          }
        }
        return false;
      }
      delay(10);
    }
    return false;
  }

  bool processInput() {
    uint8_t header[5];
    if (_transport.read(header, 5) != 5) return false;
    const uint8_t type = header[0];
    const uint16_t id = static_cast<uint16_t>((header[1] << 8) | header[2]);
    const uint16_t length = static_cast<uint16_t>((header[3] << 8) | header[4]);
    switch (type) {
      case HYPER_TCP_CMD_RESPONSE:
        Serial.printf("response %u %u\n", id, length);  // and its payload is never read
        return true;
      case HYPER_TCP_CMD_PING:
        Serial.printf("ping %u\n", id);
        sendCmd(HYPER_TCP_CMD_RESPONSE, id, nullptr, 0);
        return true;
      case HYPER_TCP_CMD_JSON_MESSAGE:
      case HYPER_TCP_CMD_BROADCAST:
        if (length > 0) {
          std::string text(length, '\0');
          if (_transport.read(&text[0], length) == length) deliver(type, text);
        }
        sendCmd(HYPER_TCP_CMD_RESPONSE, id, nullptr, 0);
        return true;
      case HYPER_TCP_CMD_REDIRECT:
        if (length > 0) {
          std::string text(length, '\0');
          if (_transport.read(&text[0], length) == length) redirect(text);
        }
        return true;
      default: {
        Serial.printf("frame %u %u %u\n", type, id, length);
        char dummy[256];
        _transport.read(dummy, length < sizeof dummy ? length : sizeof dummy);
        return true;
      }
    }
  }

  // The original parses with ArduinoJson and calls its hook only when it
  // finds "from" and "payload"; the acknowledgement goes out either way.
  void deliver(uint8_t type, std::string& text) {
    HyperTCPJsonSpan from;
    HyperTCPJsonSpan payload;
    char sender[128];
    if (HyperTCPJson::find(text.data(), text.size(), "from", from) &&
        HyperTCPJson::find(text.data(), text.size(), "payload", payload) && HyperTCPJson::isObject(payload) &&
        HyperTCPJson::getString(from, sender, sizeof sender)) {
      Serial.printf("%s %s %.*s\n", type == HYPER_TCP_CMD_BROADCAST ? "broadcast" : "message", sender,
                    static_cast<int>(payload.len), payload.ptr);
    }
  }

  // The original closes, points the transport elsewhere and never connects
  // again: the device is offline from here on.
  void redirect(std::string& text) {
    HyperTCPJsonSpan server;
    char host[128];
    if (HyperTCPJson::find(text.data(), text.size(), "server", server) &&
        HyperTCPJson::getString(server, host, sizeof host)) {
      HyperTCPJsonSpan port;
      uint32_t number = 80;
      if (HyperTCPJson::find(text.data(), text.size(), "port", port)) HyperTCPJson::getUint(port, number);
      _transport.disconnect();
      _authenticated = false;
      Serial.printf("redirect %s %u\n", host, static_cast<unsigned>(number));
    }
  }

  StreamTransport& _transport;
  std::string _token;
  bool _authenticated;
  uint16_t _msgId;
  uint32_t _lastPing;
};

PosixClient client;
StreamTransport transport(client);
OriginalProtocol protocol(transport);

void usage() {
  fprintf(stderr, "usage: original --token T --host H --port P\n");
  exit(2);
}

void quit() {
  transport.disconnect();
  Serial.println("bye");
  exit(0);
}

void report(bool sent) { Serial.println(sent ? "sent" : "send-failed"); }

void command(char* text) {
  char* rest = console::split(text);
  if (strcmp(text, "quit") == 0) {
    quit();
  } else if (strcmp(text, "send") == 0 && rest != nullptr) {
    char* json = console::split(rest);
    report(json != nullptr && protocol.sendMessage(rest, json));
  } else if (strcmp(text, "broadcast") == 0 && rest != nullptr) {
    report(protocol.broadcastMessage(rest));
  } else if (strcmp(text, "flood") == 0 && rest != nullptr) {
    char* target = console::split(rest);
    char* json = target != nullptr ? console::split(target) : nullptr;
    long count = strtol(rest, nullptr, 10);
    long sent = 0;
    for (long k = 0; json != nullptr && k < count; k++) sent += protocol.sendMessage(target, json) ? 1 : 0;
    Serial.printf("flooded %ld\n", sent);
  } else if (strcmp(text, "big") == 0 && rest != nullptr) {
    char* target = console::split(rest);
    const long size = strtol(rest, nullptr, 10);
    const std::string empty = std::string("{\"targetId\":\"") + (target ? target : "") + "\",\"payload\":{\"pad\":\"\"}}";
    const std::string pad(size > static_cast<long>(empty.size()) ? static_cast<size_t>(size) - empty.size() : 0, 'x');
    report(target != nullptr && protocol.sendMessage(target, ("{\"pad\":\"" + pad + "\"}").c_str()));
  } else if (strcmp(text, "login") == 0) {
    report(protocol.loginAgain());
  } else {
    Serial.printf("unknown-command %s\n", text);
  }
}

}  // namespace

void setup() {
  const char* token = nullptr;
  const char* host = nullptr;
  long port = 0;
  for (int i = 1; i + 1 < hostArgc; i += 2) {
    if (strcmp(hostArgv[i], "--token") == 0) {
      token = hostArgv[i + 1];
    } else if (strcmp(hostArgv[i], "--host") == 0) {
      host = hostArgv[i + 1];
    } else if (strcmp(hostArgv[i], "--port") == 0) {
      port = strtol(hostArgv[i + 1], nullptr, 10);
    } else {
      usage();
    }
  }
  if (token == nullptr || host == nullptr || port <= 0 || port > 65535) usage();
  Serial.println(protocol.connect(token, host, static_cast<uint16_t>(port)) ? "login-ok" : "login-failed");
}

void loop() {
  protocol.run();
  console::poll(command, quit);
}
