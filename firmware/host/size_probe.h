// The size probe's world: a Client whose methods live in another file (as
// WiFiClient's live in the core), and inputs the compiler cannot foresee,
// so that nothing the library does is optimized away.

#ifndef HYPERTCP_HOST_SIZE_PROBE_H
#define HYPERTCP_HOST_SIZE_PROBE_H

#include "Arduino.h"
#include "Client.h"

class NetClient : public Client {
 public:
  int connect(const char* host, uint16_t port) override;
  size_t write(uint8_t byte) override;
  size_t write(const uint8_t* buf, size_t size) override;
  int available() override;
  int read() override;
  int read(uint8_t* buf, size_t size) override;
  int peek() override;
  void flush() override;
  void stop() override;
  uint8_t connected() override;
  operator bool() override;
};

const char* probeInput();
bool probeRunning();

#endif  // HYPERTCP_HOST_SIZE_PROBE_H
