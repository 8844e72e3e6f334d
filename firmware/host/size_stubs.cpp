// What the Arduino core would provide to the size probe: the Client's
// methods, the clock, random(), operator delete.  Linked into both the
// probe and its baseline, so it cancels out of the library's cost.

#include <stddef.h>

#include "size_probe.h"

namespace {
volatile int sink;
}

int NetClient::connect(const char* host, uint16_t port) { return host[0] + port + sink; }
size_t NetClient::write(uint8_t byte) { return byte + static_cast<size_t>(sink); }
size_t NetClient::write(const uint8_t* buf, size_t size) { return buf[0] + size + static_cast<size_t>(sink); }
int NetClient::available() { return sink; }
int NetClient::read() { return sink; }
int NetClient::read(uint8_t* buf, size_t size) { return buf[0] + static_cast<int>(size) + sink; }
int NetClient::peek() { return sink; }
void NetClient::flush() {}
void NetClient::stop() { sink = 0; }
uint8_t NetClient::connected() { return static_cast<uint8_t>(sink); }
NetClient::operator bool() { return sink != 0; }

const char* probeInput() { return sink != 0 ? "a" : "b"; }
bool probeRunning() { return sink != 0; }
uint32_t millis() { return static_cast<uint32_t>(sink); }
long random(long howbig) { return howbig != 0 ? sink % howbig : 0; }
void operator delete(void* p) noexcept { sink = p != nullptr; }
void operator delete(void* p, size_t size) noexcept { sink = p != nullptr && size != 0; }
