// HyperTCPTransport.h - the byte pipe under the protocol.

#ifndef HYPERTCP_TRANSPORT_H
#define HYPERTCP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

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

#endif  // HYPERTCP_TRANSPORT_H
