// The host's Arduino core: the clock, random numbers, pin stubs, Serial and
// main(), which runs a sketch the way the ESP32 core does.

#include "Arduino.h"

#include <time.h>

HostSerial Serial;
int hostArgc = 0;
char** hostArgv = nullptr;

namespace {

uint64_t monotonicUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

uint64_t startUs = 0;
uint32_t millisStart = 0;
uint8_t pins[256];

}  // namespace

uint32_t millis() { return static_cast<uint32_t>(millisStart + (monotonicUs() - startUs) / 1000u); }

uint32_t micros() { return static_cast<uint32_t>(monotonicUs() - startUs); }

void delay(uint32_t ms) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ms / 1000u);
  ts.tv_nsec = static_cast<long>(ms % 1000u) * 1000000L;
  nanosleep(&ts, nullptr);
}

long random(long howbig) {
  if (howbig <= 0) return 0;
  return static_cast<long>(rand() % howbig);
}

long random(long howsmall, long howbig) {
  if (howsmall >= howbig) return howsmall;
  return howsmall + random(howbig - howsmall);
}

void randomSeed(unsigned long seed) { srand(static_cast<unsigned>(seed)); }

void pinMode(uint8_t pin, uint8_t mode) {
  (void)pin;
  (void)mode;
}

void digitalWrite(uint8_t pin, uint8_t value) { pins[pin] = value; }

int digitalRead(uint8_t pin) { return pins[pin]; }

uint16_t analogRead(uint8_t pin) { return static_cast<uint16_t>(1000u + pin); }

int main(int argc, char** argv) {
  hostArgc = argc;
  hostArgv = argv;
  startUs = monotonicUs();
  const char* start = getenv("HOST_MILLIS_START");
  if (start != nullptr) millisStart = static_cast<uint32_t>(strtoul(start, nullptr, 0));
  srand(static_cast<unsigned>(startUs));
  setup();
  for (;;) loop();
}
