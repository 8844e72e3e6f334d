// Client.h for the host: the Arduino Client interface (as in the Arduino
// core's Client.h, minus the IPAddress overload and Stream's parsing
// helpers), so host code is written against the same calls as WiFiClient.

#ifndef HYPERTCP_HOST_CLIENT_H
#define HYPERTCP_HOST_CLIENT_H

#include "Arduino.h"

class Client {
 public:
  virtual ~Client() {}
  virtual int connect(const char* host, uint16_t port) = 0;
  virtual size_t write(uint8_t byte) = 0;
  virtual size_t write(const uint8_t* buf, size_t size) = 0;
  virtual int available() = 0;
  virtual int read() = 0;
  virtual int read(uint8_t* buf, size_t size) = 0;
  virtual int peek() = 0;
  virtual void flush() = 0;
  virtual void stop() = 0;
  virtual uint8_t connected() = 0;
  virtual operator bool() = 0;
};

#endif  // HYPERTCP_HOST_CLIENT_H
