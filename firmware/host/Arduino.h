// Arduino.h for the host: just enough of the Arduino core for the HyperTCP
// library, its example sketch and the host test programs to build and run on
// Linux.  Time is the real monotonic clock; Serial is stdout.
//
// HostMain.cpp provides main(), which calls setup() once and loop() forever,
// as the Arduino core does.

#ifndef HYPERTCP_HOST_ARDUINO_H
#define HYPERTCP_HOST_ARDUINO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- Time.  millis() counts from program start plus HOST_MILLIS_START (an
// environment variable), so a test can start it just before the 32-bit wrap.
uint32_t millis();
uint32_t micros();
void delay(uint32_t ms);
inline void yield() {}

// ---- Random numbers, as in the Arduino core: random(max) is [0, max).
long random(long howbig);
long random(long howsmall, long howbig);
void randomSeed(unsigned long seed);

// ---- Pins: the example sketch drives a relay and reads a sensor.  On the
// host they are stubs (digitalWrite remembers, analogRead returns a fixed
// value).
enum : uint8_t { LOW = 0, HIGH = 1 };
enum : uint8_t { INPUT = 0, OUTPUT = 1, INPUT_PULLUP = 2 };
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
int digitalRead(uint8_t pin);
uint16_t analogRead(uint8_t pin);

#define F(text) (text)

// ---- IPAddress: IPv4 only, as sketches for the original header pass it.
class IPAddress {
 public:
  IPAddress(uint8_t a, uint8_t b, uint8_t c, uint8_t d) : _octets{a, b, c, d} {}
  uint8_t operator[](int index) const { return _octets[index]; }

 private:
  uint8_t _octets[4];
};

// ---- Serial: the subset sketches use, printing to stdout.  Every println()
// flushes, so a test reading the program's output sees whole lines at once.
class HostSerial {
 public:
  void begin(unsigned long baud) { (void)baud; }
  operator bool() const { return true; }

  size_t print(const char* s) { return out("%s", s); }
  size_t print(char c) { return out("%c", c); }
  size_t print(int v) { return out("%d", v); }
  size_t print(unsigned v) { return out("%u", v); }
  size_t print(long v) { return out("%ld", v); }
  size_t print(unsigned long v) { return out("%lu", v); }
  size_t print(double v) { return out("%.2f", v); }

  size_t println() { return line(0); }
  template <typename T>
  size_t println(T v) { return line(print(v)); }

  size_t printf(const char* format, ...) __attribute__((format(printf, 2, 3))) {
    va_list args;
    va_start(args, format);
    int n = vprintf(format, args);
    va_end(args);
    fflush(stdout);
    return n < 0 ? 0 : static_cast<size_t>(n);
  }

 private:
  size_t out(const char* format, ...) __attribute__((format(printf, 2, 3))) {
    va_list args;
    va_start(args, format);
    int n = vprintf(format, args);
    va_end(args);
    return n < 0 ? 0 : static_cast<size_t>(n);
  }
  size_t line(size_t n) {
    fputc('\n', stdout);
    fflush(stdout);
    return n + 1;
  }
};

extern HostSerial Serial;

// ---- The sketch, and the command line (host programs only).
void setup();
void loop();
extern int hostArgc;
extern char** hostArgv;

#endif  // HYPERTCP_HOST_ARDUINO_H
