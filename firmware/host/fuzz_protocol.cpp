// fuzz_protocol: a libFuzzer target for the library's receive state machine
// (built with clang -fsanitize=fuzzer,address,undefined; make fuzz).
//
// Each input is a server: the library connects through ShimClient, and the
// input decides everything it reads and when time passes.
//
//   byte 0      options: bit 0 challenge login, bit 1 a device id,
//               bit 2 a 1 s heartbeat (else the default 30 s)
//   then ops    0          the sketch sends a message, a broadcast and a
//                          qos 1 message
//               1..127     that many following bytes arrive as one segment
//               128..255   (op - 128) * 100 ms pass
//               each followed by one run()
//
// Besides the sanitizers, it checks after every run() what must always
// hold: the library wrote whole frames only, never a msg_id 0 of its own,
// nothing larger than its transmit buffer; hooks get NUL-terminated text of
// the length they are told, payloads that are JSON objects; connected and
// disconnected alternate.

#include <Arduino.h>
#include <HyperTCPProtocol.h>

#include <stdio.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "FakeCore.h"
#include "ShimClient.h"

namespace {

#define FUZZ_ASSERT(condition)                                                 \
  do {                                                                         \
    if (!(condition)) {                                                        \
      fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #condition); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef HyperTCPTransport<ShimClient> Transport;

void checkText(const char* text, size_t len) {
  FUZZ_ASSERT(text != nullptr);
  FUZZ_ASSERT(strlen(text) == len);
}

class FuzzDevice : public HyperTCPProtocol<Transport> {
 public:
  explicit FuzzDevice(Transport& t) : HyperTCPProtocol<Transport>(t), online(false) {}
  bool online;

 protected:
  void onConnected() override {
    FUZZ_ASSERT(!online);
    online = true;
  }
  void onDisconnected() override {
    FUZZ_ASSERT(online);
    online = false;
  }
  void onMessageText(const char* from, const char* json, size_t len) override {
    checkText(from, strlen(from));
    checkText(json, len);
    FUZZ_ASSERT(len >= 2 && json[0] == '{' && json[len - 1] == '}');
    FUZZ_ASSERT(online);
  }
  void onBroadcastText(const char* from, const char* json, size_t len) override {
    onMessageText(from, json, len);
  }
  bool onRedirect(const char* host, uint16_t port, bool tls) override {
    (void)tls;
    checkText(host, strlen(host));
    FUZZ_ASSERT(host[0] != '\0' && strlen(host) <= HYPERTCP_MAX_HOST_LEN && port != 0);
    return true;
  }
};

void checkWritten(ShimClient& client) {
  for (const ShimFrame& f : client.frames()) {
    FUZZ_ASSERT(f.payload.size() + HYPER_TCP_HEADER_SIZE <= HYPERTCP_TX_BUFFER_SIZE);
    // Its own frames count from 1; a RESPONSE echoes whatever it answers.
    if (f.type != HYPER_TCP_CMD_RESPONSE) FUZZ_ASSERT(f.msgId != 0);
    if (f.type == HYPER_TCP_CMD_RESPONSE) FUZZ_ASSERT(f.payload.size() <= 1);
  }
  FUZZ_ASSERT(!client.partial());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  fake::now = 1000;
  ShimClient client;
  Transport transport(client);
  FuzzDevice device(transport);
  const uint8_t options = data[0];
  if (options & 1) device.useChallengeLogin();
  if (options & 2) device.setDeviceId("fuzz-device");
  if (options & 4) device.setHeartbeat(1000);
  device.setReconnectDelay(100, 1000);
  device.connect("fuzz-token", "server.example", 8080);
  checkWritten(client);
  size_t i = 1;
  while (i < size) {
    const uint8_t op = data[i++];
    if (op == 0) {
      device.sendMessage("target", "{\"n\":1}");
      device.broadcastMessage("{\"n\":2}");
      device.sendMessage("target", "{\"n\":3}", HYPER_TCP_QOS_1);
    } else if (op < 128) {
      const size_t n = op < size - i ? op : size - i;
      client.respond(std::string(reinterpret_cast<const char*>(data + i), n));
      i += n;
    } else {
      fake::advance(static_cast<uint32_t>(op - 128) * 100u);
    }
    device.run();
    checkWritten(client);
    FUZZ_ASSERT(device.online == device.connected());
  }
  device.disconnect();
  FUZZ_ASSERT(!device.online);
  return 0;
}
