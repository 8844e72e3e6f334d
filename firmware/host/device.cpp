// device: a HyperTCP device on the host, written as a sketch (setup/loop,
// global client, transport and protocol objects), for the firmware tests.
//
//   device --token T --host H --port P [--device-id ID] [--challenge]
//          [--heartbeat MS] [--timeout MS] [--backoff MIN:MAX]
//          [--trace-frames] [--trace-reads]
//
// It prints one line per event on stdout and takes one command per line on
// stdin:
//
//   events                          commands
//   connect 1|0                     send TARGET JSON
//   connected                       sendq TARGET JSON   (qos 1)
//   disconnected                    server JSON
//   login-failed STATUS MILLIS      broadcast JSON
//   message FROM JSON               flood COUNT TARGET JSON
//   broadcast FROM JSON             disconnect
//                                   quit   (also on end of input)
//   response ID STATUS
//   oversize TYPE ID LENGTH
//   redirect HOST PORT TLS
//   sent ID | send-failed
//   flooded SENT
//   frame TYPE ID LENGTH            (with --trace-frames)
//   read BYTES                      (with --trace-reads)

#include <Arduino.h>
#include <HyperTCPProtocol.h>

#include "Console.h"
#include "PosixClient.h"

class Device : public HyperTCPProtocol<HyperTCPTransport<PosixClient>> {
 public:
  explicit Device(HyperTCPTransport<PosixClient>& transport)
      : HyperTCPProtocol<HyperTCPTransport<PosixClient>>(transport), traceFrames(false) {}

  bool traceFrames;

 protected:
  void onConnected() override { Serial.println("connected"); }
  void onDisconnected() override { Serial.println("disconnected"); }
  void onLoginFailed(uint8_t status) override {
    Serial.printf("login-failed %u %lu\n", status, static_cast<unsigned long>(millis()));
  }
  void onMessageText(const char* from, const char* json, size_t len) override {
    Serial.printf("message %s %.*s\n", from, static_cast<int>(len), json);
  }
  void onBroadcastText(const char* from, const char* json, size_t len) override {
    Serial.printf("broadcast %s %.*s\n", from, static_cast<int>(len), json);
  }
  void onResponse(uint16_t msgId, uint8_t status) override {
    Serial.printf("response %u %u\n", msgId, status);
  }
  void onOversizeFrame(uint8_t type, uint16_t msgId, uint16_t length) override {
    Serial.printf("oversize %u %u %u\n", type, msgId, length);
  }
  bool onRedirect(const char* host, uint16_t port, bool tls) override {
    Serial.printf("redirect %s %u %d\n", host, port, tls ? 1 : 0);
    return true;
  }
  void onFrame(uint8_t type, uint16_t msgId, uint16_t length) override {
    if (traceFrames) Serial.printf("frame %u %u %u\n", type, msgId, length);
  }
};

PosixClient client;
HyperTCPTransport<PosixClient> transport(client);
Device device(transport);

namespace {

void usage() {
  fprintf(stderr,
          "usage: device --token T --host H --port P [--device-id ID] [--challenge]\n"
          "              [--heartbeat MS] [--timeout MS] [--backoff MIN:MAX]\n"
          "              [--trace-frames] [--trace-reads]\n");
  exit(2);
}

void printRead(size_t bytes) { Serial.printf("read %zu\n", bytes); }

void quit() {
  device.disconnect();
  Serial.println("bye");
  exit(0);
}

void report(uint16_t msgId) {
  if (msgId != 0) {
    Serial.printf("sent %u\n", msgId);
  } else {
    Serial.println("send-failed");
  }
}

void command(char* text) {
  char* rest = console::split(text);
  if (strcmp(text, "quit") == 0) {
    quit();
  } else if (strcmp(text, "disconnect") == 0) {
    device.disconnect();
    Serial.println("stopped");
  } else if (strcmp(text, "send") == 0 && rest != nullptr) {
    char* json = console::split(rest);
    report(json != nullptr ? device.sendMessage(rest, json) : 0);
  } else if (strcmp(text, "sendq") == 0 && rest != nullptr) {
    char* json = console::split(rest);
    report(json != nullptr ? device.sendMessage(rest, json, HYPER_TCP_QOS_1) : 0);
  } else if (strcmp(text, "server") == 0 && rest != nullptr) {
    report(device.sendToServer(rest));
  } else if (strcmp(text, "broadcast") == 0 && rest != nullptr) {
    report(device.broadcastMessage(rest));
  } else if (strcmp(text, "flood") == 0 && rest != nullptr) {
    char* target = console::split(rest);
    char* json = target != nullptr ? console::split(target) : nullptr;
    long count = strtol(rest, nullptr, 10);
    long sent = 0;
    for (long k = 0; json != nullptr && k < count; k++) {
      if (device.sendMessage(target, json) != 0) sent++;
    }
    Serial.printf("flooded %ld\n", sent);
  } else {
    Serial.printf("unknown-command %s\n", text);
  }
}

}  // namespace

void setup() {
  const char* token = nullptr;
  const char* host = nullptr;
  long port = 0;
  unsigned long heartbeatMs = HYPERTCP_HEARTBEAT_MS;
  unsigned long timeoutMs = 0;
  for (int i = 1; i < hostArgc; i++) {
    const char* arg = hostArgv[i];
    const char* value = i + 1 < hostArgc ? hostArgv[i + 1] : nullptr;
    if (strcmp(arg, "--trace-frames") == 0) {
      device.traceFrames = true;
      continue;
    }
    if (strcmp(arg, "--challenge") == 0) {
      device.useChallengeLogin();
      continue;
    }
    if (strcmp(arg, "--trace-reads") == 0) {
      client.setReadObserver(printRead);
      continue;
    }
    if (value == nullptr) usage();
    i++;
    if (strcmp(arg, "--token") == 0) {
      token = value;
    } else if (strcmp(arg, "--host") == 0) {
      host = value;
    } else if (strcmp(arg, "--port") == 0) {
      port = strtol(value, nullptr, 10);
    } else if (strcmp(arg, "--device-id") == 0) {
      if (!device.setDeviceId(value)) usage();
    } else if (strcmp(arg, "--heartbeat") == 0) {
      heartbeatMs = strtoul(value, nullptr, 10);
    } else if (strcmp(arg, "--timeout") == 0) {
      timeoutMs = strtoul(value, nullptr, 10);
    } else if (strcmp(arg, "--backoff") == 0) {
      char* end = nullptr;
      unsigned long minMs = strtoul(value, &end, 10);
      unsigned long maxMs = (end != nullptr && *end == ':') ? strtoul(end + 1, nullptr, 10) : minMs;
      device.setReconnectDelay(static_cast<uint32_t>(minMs), static_cast<uint32_t>(maxMs));
    } else {
      usage();
    }
  }
  if (token == nullptr || host == nullptr || port <= 0 || port > 65535) usage();
  device.setHeartbeat(static_cast<uint32_t>(heartbeatMs), static_cast<uint32_t>(timeoutMs));
  Serial.begin(115200);
  Serial.printf("connect %d\n", device.connect(token, host, static_cast<uint16_t>(port)) ? 1 : 0);
}

void loop() {
  device.run();
  console::poll(command, quit);
}
