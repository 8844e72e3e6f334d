// The Arduino core for in-process tests: time stands still until the test
// moves it, random numbers are chosen by the test, Serial prints to stdout.

#include "FakeCore.h"

HostSerial Serial;
int hostArgc = 0;
char** hostArgv = nullptr;

namespace fake {
uint32_t now = 0;
bool randomHigh = true;
unsigned randomCalls = 0;
}  // namespace fake

namespace {
uint8_t pins[256];
}

uint32_t millis() { return fake::now; }

uint32_t micros() { return fake::now * 1000u; }

void delay(uint32_t ms) { fake::advance(ms); }

long random(long howbig) {
  fake::randomCalls++;
  if (howbig <= 0) return 0;
  return fake::randomHigh ? howbig - 1 : 0;
}

long random(long howsmall, long howbig) {
  if (howsmall >= howbig) return howsmall;
  return howsmall + random(howbig - howsmall);
}

void randomSeed(unsigned long seed) { (void)seed; }

void pinMode(uint8_t pin, uint8_t mode) {
  (void)pin;
  (void)mode;
}

void digitalWrite(uint8_t pin, uint8_t value) { pins[pin] = value; }

int digitalRead(uint8_t pin) { return pins[pin]; }

uint16_t analogRead(uint8_t pin) { return static_cast<uint16_t>(1000u + pin); }
