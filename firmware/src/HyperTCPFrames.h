// HyperTCPFrames.h - framing on fixed buffers: a reader that reassembles
// frames from a byte stream of any segmentation, and a writer that assembles
// one frame to go out in a single write.

#ifndef HYPERTCP_FRAMES_H
#define HYPERTCP_FRAMES_H

#include "HyperTCPConfig.h"
#include "HyperTCPWire.h"

// HyperTCPFrameReader: bytes in, frames out, nothing allocated.  The caller
// asks where the next bytes go (space()), reads at most that many there, and
// reports them (consumed()).  A payload longer than the buffer is skipped
// byte-exactly, so the stream stays in sync; the buffer is scratch space for
// it meanwhile.
class HyperTCPFrameReader {
 public:
  // What consumed() completed (bits): the header of a new frame, the frame.
  // A frame with an empty payload completes with its header.
  enum Event : uint8_t { NONE = 0, HEADER = 1, FRAME = 2 };

  HyperTCPFrameReader() : _type(0), _id(0), _len(0), _pos(0), _state(AT_HEADER), _hdrLen(0) {}

  // Forgets any partial frame (a new connection starts with a header).
  void reset() {
    _state = AT_HEADER;
    _hdrLen = 0;
  }

  // Where the next bytes go; `want` is how many belong to the current part.
  uint8_t* space(size_t& want) {
    switch (_state) {
      case AT_HEADER:
        want = HYPER_TCP_HEADER_SIZE - _hdrLen;
        return _hdr + _hdrLen;
      case AT_PAYLOAD:
        want = static_cast<size_t>(_len - _pos);
        return _buf + _pos;
      default:  // SKIPPING
        want = static_cast<size_t>(_len - _pos);
        if (want > HYPERTCP_RX_BUFFER_SIZE) want = HYPERTCP_RX_BUFFER_SIZE;
        return _buf;
    }
  }

  // `count` bytes (at most the `want` of space()) were read into space().
  uint8_t consumed(size_t count) {
    if (_state == AT_HEADER) {
      _hdrLen = static_cast<uint8_t>(_hdrLen + count);
      if (_hdrLen < HYPER_TCP_HEADER_SIZE) return NONE;
      _hdrLen = 0;
      _type = _hdr[0];
      _id = static_cast<uint16_t>((_hdr[1] << 8) | _hdr[2]);
      _len = static_cast<uint16_t>((_hdr[3] << 8) | _hdr[4]);
      _pos = 0;
      if (_len > HYPERTCP_RX_BUFFER_SIZE) {
        _state = SKIPPING;
        return HEADER;
      }
      if (_len > 0) {
        _state = AT_PAYLOAD;
        return HEADER;
      }
      _buf[0] = 0;
      return HEADER | FRAME;
    }
    _pos = static_cast<uint16_t>(_pos + count);
    if (_pos < _len) return NONE;
    const bool skipped = _state == SKIPPING;
    _state = AT_HEADER;
    if (skipped) return NONE;
    _buf[_len] = 0;  // the buffer has one spare byte for this
    return FRAME;
  }

  // The current frame: its header, and (once complete) its payload,
  // NUL-terminated.  The payload may be modified in place.
  uint8_t type() const { return _type; }
  uint16_t msgId() const { return _id; }
  uint16_t length() const { return _len; }
  char* payload() { return reinterpret_cast<char*>(_buf); }
  // The current frame is longer than the buffer and is being skipped.
  bool skipping() const { return _state == SKIPPING; }

 private:
  enum State : uint8_t { AT_HEADER, AT_PAYLOAD, SKIPPING };

  uint8_t _type;
  uint16_t _id;
  uint16_t _len;
  uint16_t _pos;  // payload bytes read (or skipped) so far
  State _state;
  uint8_t _hdrLen;
  uint8_t _hdr[HYPER_TCP_HEADER_SIZE];
  uint8_t _buf[HYPERTCP_RX_BUFFER_SIZE + 1];  // +1: payloads are NUL-terminated
};

// HyperTCPFrameWriter: one outgoing frame, assembled in place.  Appends that
// do not fit mark it overflowed and are dropped whole, so a frame is either
// complete or not sent at all.
class HyperTCPFrameWriter {
 public:
  HyperTCPFrameWriter() : _len(HYPER_TCP_HEADER_SIZE), _overflow(false) {}

  void begin() {
    _len = HYPER_TCP_HEADER_SIZE;
    _overflow = false;
  }

  void append(const char* s) { append(s, strlen(s)); }

  void append(const char* s, size_t n) {
    if (_overflow || n > HYPERTCP_TX_BUFFER_SIZE - _len) {
      _overflow = true;
      return;
    }
    memcpy(_buf + _len, s, n);
    _len += n;
  }

  // Appends `s` as the inside of a JSON string.
  void appendEscaped(const char* s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s != '\0'; s++) {
      unsigned char c = static_cast<unsigned char>(*s);
      if (c == '"' || c == '\\') {
        char esc[2] = {'\\', static_cast<char>(c)};
        append(esc, 2);
      } else if (c < 0x20) {
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
        append(esc, 6);
      } else {
        append(reinterpret_cast<const char*>(&c), 1);
      }
    }
  }

  // Free room after what is written so far, for a serializer to fill;
  // commit() then counts what it wrote.
  char* tail(size_t& room) {
    room = _overflow ? 0 : HYPERTCP_TX_BUFFER_SIZE - _len;
    return reinterpret_cast<char*>(_buf + _len);
  }
  void commit(size_t n) { _len += n; }

  bool overflowed() const { return _overflow; }

  // Fills in the header.  Returns the frame's size (0 if it overflowed).
  size_t finish(uint8_t type, uint16_t msgId) {
    if (_overflow) return 0;
    const size_t payloadLen = _len - HYPER_TCP_HEADER_SIZE;
    _buf[0] = type;
    _buf[1] = static_cast<uint8_t>(msgId >> 8);
    _buf[2] = static_cast<uint8_t>(msgId & 0xFF);
    _buf[3] = static_cast<uint8_t>(payloadLen >> 8);
    _buf[4] = static_cast<uint8_t>(payloadLen & 0xFF);
    return _len;
  }

  const uint8_t* data() const { return _buf; }

 private:
  size_t _len;
  bool _overflow;
  uint8_t _buf[HYPERTCP_TX_BUFFER_SIZE];
};

#endif  // HYPERTCP_FRAMES_H
