// HyperTCPTransport.h - the byte pipe under the protocol.

#ifndef HYPERTCP_TRANSPORT_H
#define HYPERTCP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "HyperTCPConfig.h"

// HyperTCPTransport: a thin template over any Arduino Client (WiFiClient,
// WiFiClientSecure for TLS, EthernetClient, ...).  The protocol only needs
// connect, connected, available, read, write and stop, so a custom transport
// with those six calls can replace it.
template <typename ClientT>
class HyperTCPTransport {
 public:
  // (Parameter names here avoid common sketch globals such as `client`, so
  // -Wshadow stays quiet in user code.)
  explicit HyperTCPTransport(ClientT& netClient)
      : _client(&netClient), _host(nullptr), _ip(0), _port(0), _useIp(false) {}

  // As in the original header: a transport whose Client is given later with
  // setClient().  Until then it cannot connect.
  HyperTCPTransport() : _client(nullptr), _host(nullptr), _ip(0), _port(0), _useIp(false) {}
  void setClient(ClientT* netClient) { _client = netClient; }

  // The original header's way to name the server, read by the protocol's
  // connect(token).  `host` is not copied: keep it alive.
  HYPERTCP_DEPRECATED("name the server in connect(token, host, port)")
  void begin(const char* host, uint16_t port) {
    _host = host;
    _port = port;
    _useIp = false;
  }
  // An IPAddress (or anything with the four octets at [0]..[3]).
  template <typename AddressT>
  HYPERTCP_DEPRECATED("name the server in connect(token, host, port)")
  void begin(const AddressT& ip, uint16_t port) {
    _ip = (static_cast<uint32_t>(ip[0]) << 24) | (static_cast<uint32_t>(ip[1]) << 16) |
          (static_cast<uint32_t>(ip[2]) << 8) | static_cast<uint32_t>(ip[3]);
    _port = port;
    _useIp = true;
  }
  // The address given to begin(), as text; false if there is none or it
  // does not fit in `size`.
  bool address(char* host, size_t size, uint16_t& port) const {
    port = _port;
    if (!_useIp) {
      if (_host == nullptr || strlen(_host) >= size) return false;
      memcpy(host, _host, strlen(_host) + 1);
      return port != 0;
    }
    size_t n = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (size - n < 4) return false;  // room for "255." or "255\0"
      unsigned octet = (_ip >> shift) & 0xFF;
      if (octet >= 100) host[n++] = static_cast<char>('0' + octet / 100);
      if (octet >= 10) host[n++] = static_cast<char>('0' + octet / 10 % 10);
      host[n++] = static_cast<char>('0' + octet % 10);
      host[n++] = shift > 0 ? '.' : '\0';
    }
    return port != 0;
  }

  bool connect(const char* host, uint16_t port) {
    return _client != nullptr && _client->connect(host, port) > 0;
  }
  bool connected() { return _client != nullptr && _client->connected(); }
  int available() { return _client != nullptr ? _client->available() : 0; }
  int read(uint8_t* buf, size_t size) { return _client != nullptr ? _client->read(buf, size) : -1; }
  // True only if every byte was accepted: a short write breaks the framing.
  bool write(const uint8_t* buf, size_t size) {
    return _client != nullptr && _client->write(buf, size) == size;
  }
  void stop() {
    if (_client != nullptr) _client->stop();
  }

  // The Client under the transport (setClient() must have given one).
  ClientT& client() { return *_client; }

 private:
  ClientT* _client;
  const char* _host;
  uint32_t _ip;
  uint16_t _port;
  bool _useIp;
};

#endif  // HYPERTCP_TRANSPORT_H
