// ShimClient: an Arduino Client with no network behind it, for in-process
// tests of the library (in the style of PubSubClient's ShimClient).
//
// The test scripts what the "server" sends (respond()), and reads back what
// the library wrote (frames(), or expect() for exact bytes).  connect() can
// be made to fail, the peer can close, writes can fail.  Nothing blocks, and
// with FakeCore's millis() nothing depends on real time.

#ifndef HYPERTCP_HOST_SHIM_CLIENT_H
#define HYPERTCP_HOST_SHIM_CLIENT_H

#include <string>
#include <vector>

#include "Arduino.h"
#include "Client.h"

// One frame as it travels: the test's view of the wire.
struct ShimFrame {
  uint8_t type;
  uint16_t msgId;
  std::string payload;

  bool operator==(const ShimFrame& other) const {
    return type == other.type && msgId == other.msgId && payload == other.payload;
  }
};

// The bytes of a frame, header included.
inline std::string shimFrame(uint8_t type, uint16_t msgId, const std::string& payload = "") {
  std::string out;
  out += static_cast<char>(type);
  out += static_cast<char>(msgId >> 8);
  out += static_cast<char>(msgId & 0xFF);
  out += static_cast<char>((payload.size() >> 8) & 0xFF);
  out += static_cast<char>(payload.size() & 0xFF);
  return out + payload;
}

class ShimClient : public Client {
 public:
  ShimClient()
      : _open(false),
        _peerClosed(false),
        _partial(false),
        _writeFails(false),
        _failConnects(0),
        _stops(0),
        _reads(0),
        _inputPos(0) {}

  // ---- Scripting the peer.

  // Bytes the server sends; they are readable from the next available().
  void respond(const std::string& bytes) { _input += bytes; }
  void respond(uint8_t type, uint16_t msgId, const std::string& payload = "") {
    respond(shimFrame(type, msgId, payload));
  }
  // The next `count` connect() calls fail.
  void failConnects(int count) { _failConnects = count; }
  // The server closes its end (the library still reads what is buffered).
  void closeByPeer() { _peerClosed = true; }
  // Every write from now on fails (0 bytes accepted).
  void failWrites(bool on) { _writeFails = on; }

  // ---- Reading back what the library did.

  // Every "host:port" connect() was called with, in order.
  const std::vector<std::string>& connects() const { return _connects; }
  int stops() const { return _stops; }
  // read() calls that returned bytes.
  int reads() const { return _reads; }
  size_t unread() const { return _input.size() - _inputPos; }
  bool open() const { return _open; }

  // The frames written since the last call (a partial frame is an error).
  std::vector<ShimFrame> frames() {
    std::vector<ShimFrame> out;
    size_t i = 0;
    while (_output.size() - i >= 5) {
      const uint8_t* h = reinterpret_cast<const uint8_t*>(_output.data() + i);
      size_t len = static_cast<size_t>((h[3] << 8) | h[4]);
      if (_output.size() - i - 5 < len) break;
      ShimFrame f;
      f.type = h[0];
      f.msgId = static_cast<uint16_t>((h[1] << 8) | h[2]);
      f.payload = _output.substr(i + 5, len);
      out.push_back(f);
      i += 5 + len;
    }
    _partial = i != _output.size();
    _output.erase(0, i);
    return out;
  }
  // Whether frames() left bytes that are not a whole frame.
  bool partial() const { return _partial; }

  // PubSubClient's way: the exact bytes expected next on the wire.  Returns
  // whether they came, and consumes them.
  bool expect(const std::string& bytes) {
    if (_output.compare(0, bytes.size(), bytes) != 0) return false;
    _output.erase(0, bytes.size());
    return true;
  }
  const std::string& written() const { return _output; }

  // ---- Client.

  int connect(const char* host, uint16_t port) override {
    _connects.push_back(std::string(host) + ":" + std::to_string(port));
    if (_failConnects > 0) {
      _failConnects--;
      return 0;
    }
    _open = true;
    _peerClosed = false;
    _input.clear();
    _inputPos = 0;
    return 1;
  }
  size_t write(uint8_t byte) override { return write(&byte, 1); }
  size_t write(const uint8_t* buf, size_t size) override {
    if (!_open || _writeFails) return 0;
    _output.append(reinterpret_cast<const char*>(buf), size);
    return size;
  }
  int available() override { return _open ? static_cast<int>(unread()) : 0; }
  int read() override {
    uint8_t byte;
    return read(&byte, 1) == 1 ? byte : -1;
  }
  int read(uint8_t* buf, size_t size) override {
    if (!_open || unread() == 0 || size == 0) return -1;
    if (size > unread()) size = unread();
    memcpy(buf, _input.data() + _inputPos, size);
    _inputPos += size;
    _reads++;
    if (_inputPos == _input.size()) {
      _input.clear();
      _inputPos = 0;
    }
    return static_cast<int>(size);
  }
  int peek() override { return _open && unread() > 0 ? static_cast<uint8_t>(_input[_inputPos]) : -1; }
  void flush() override {}
  void stop() override {
    _open = false;
    _stops++;
  }
  uint8_t connected() override { return _open && (!_peerClosed || unread() > 0) ? 1 : 0; }
  operator bool() override { return connected() != 0; }

 private:
  bool _open;
  bool _peerClosed;
  bool _partial;
  bool _writeFails;
  int _failConnects;
  int _stops;
  int _reads;
  size_t _inputPos;
  std::string _input;
  std::string _output;
  std::vector<std::string> _connects;
};

#endif  // HYPERTCP_HOST_SHIM_CLIENT_H
