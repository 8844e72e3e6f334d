// FakeCore: the Arduino core for in-process tests, with a clock and random
// numbers the test sets (FakeCore.cpp).  Link it instead of HostMain.cpp.

#ifndef HYPERTCP_HOST_FAKE_CORE_H
#define HYPERTCP_HOST_FAKE_CORE_H

#include "Arduino.h"

namespace fake {

// What millis() returns; delay() advances it.
extern uint32_t now;
inline void advance(uint32_t ms) { now += ms; }

// random(n) returns the highest value (n - 1) when true, else 0, so the
// reconnect jitter is at one end of its range or the other.
extern bool randomHigh;
// How many times random() was called.
extern unsigned randomCalls;

}  // namespace fake

#endif  // HYPERTCP_HOST_FAKE_CORE_H
