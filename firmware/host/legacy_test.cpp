// legacy_test: code written for the original HyperTCP header compiles and
// behaves as it expects: `bool ok = protocol.run()`, connect(token) and
// connect(token, host) with their defaults, the transport's default
// constructor with setClient(), and transport.begin(...).
//
// The Makefile builds this with deprecation warnings shown but not fatal,
// into build/legacy_test.warnings; tests/test_firmware_unit.py checks that
// the deprecated calls, and only they, are flagged.

#include <Arduino.h>
#include <HyperTCPProtocol.h>

#include <string>

#include "FakeCore.h"
#include "ShimClient.h"
#include "UnitTest.h"

namespace {

typedef HyperTCPTransport<ShimClient> Transport;

// The seed README's shape: public overrides, as its sketch writes them.
class MyProtocolWithHandlers : public HyperTCPProtocol<Transport> {
 public:
  MyProtocolWithHandlers(Transport& transport) : HyperTCPProtocol<Transport>(transport) {}

  std::string last;

  void onMessageText(const char* from, const char* json, size_t len) override {
    last = std::string(from) + " " + std::string(json, len);
  }
#if HYPERTCP_HAS_ARDUINOJSON
  void onMessageReceived(const char* from, JsonObject& payload) override {
    (void)from;
    (void)payload;
  }
  void onBroadcastMessage(const char* from, JsonObject& payload) override {
    (void)from;
    (void)payload;
  }
#endif
};

const std::string kLoginOk = std::string(1, static_cast<char>(HYPER_TCP_STATUS_SUCCESS));

}  // namespace

TEST(default_transport_with_set_client_and_begin_then_connect_token) {
  fake::now = 1000;
  ShimClient wifiClient;
  Transport myTransport;  // the original's default constructor
  MyProtocolWithHandlers myProtocol(myTransport);
  bool ok = myProtocol.run();
  CHECK(!ok);  // nothing to do before connect()
  myTransport.setClient(&wifiClient);
  myTransport.begin("your-server.com", 8080);
  ok = myProtocol.connect("your_auth_token");
  CHECK(ok);
  CHECK_EQ(wifiClient.connects().size(), 1u);
  if (!wifiClient.connects().empty()) CHECK_EQ(wifiClient.connects()[0], std::string("your-server.com:8080"));
  CHECK_EQ(wifiClient.frames().size(), 1u);  // the LOGIN
  wifiClient.respond(HYPER_TCP_CMD_RESPONSE, 1, kLoginOk);
  ok = myProtocol.run();
  CHECK(ok);
  CHECK(myProtocol.connected());
  wifiClient.respond(HYPER_TCP_CMD_JSON_MESSAGE, 9, "{\"from\":\"alice\",\"payload\":{\"on\":1}}");
  CHECK(myProtocol.run());
  CHECK_EQ(myProtocol.last, std::string("alice {\"on\":1}"));
  myProtocol.disconnect();
  CHECK(!myProtocol.run());
}

TEST(begin_with_an_ip_address) {
  fake::now = 1000;
  ShimClient wifiClient;
  Transport myTransport;
  myTransport.setClient(&wifiClient);
  MyProtocolWithHandlers myProtocol(myTransport);
  myTransport.begin(IPAddress(192, 168, 1, 100), 8080);
  CHECK(myProtocol.connect("your_auth_token"));
  CHECK_EQ(wifiClient.connects().size(), 1u);
  if (!wifiClient.connects().empty()) CHECK_EQ(wifiClient.connects()[0], std::string("192.168.1.100:8080"));
  myTransport.begin(IPAddress(10, 0, 0, 7), 1);
  CHECK(myProtocol.connect("your_auth_token"));
  CHECK_EQ(wifiClient.connects().back(), std::string("10.0.0.7:1"));
}

TEST(connect_with_token_and_host_uses_port_80) {
  fake::now = 1000;
  ShimClient wifiClient;
  Transport myTransport(wifiClient);
  MyProtocolWithHandlers myProtocol(myTransport);
  CHECK(myProtocol.connect("your_auth_token", "your-server.com"));
  CHECK_EQ(wifiClient.connects().back(), std::string("your-server.com:80"));
}

TEST(connect_token_without_begin_fails_and_run_says_so) {
  fake::now = 1000;
  ShimClient wifiClient;
  Transport myTransport(wifiClient);
  MyProtocolWithHandlers myProtocol(myTransport);
  CHECK(!myProtocol.connect("your_auth_token"));
  CHECK(!myProtocol.run());
  CHECK_EQ(wifiClient.connects().size(), 0u);
}

TEST(a_transport_without_a_client_cannot_connect) {
  fake::now = 1000;
  Transport myTransport;
  MyProtocolWithHandlers myProtocol(myTransport);
  CHECK(!myProtocol.connect("your_auth_token", "your-server.com", 8080));
  CHECK(!myProtocol.connected());
  CHECK_EQ(myProtocol.sendMessage("server", "{}"), 0);
}

// The original sketch's loop: reconnect whenever run() returns false.  With
// the server down, run() keeps returning true while the library backs off
// on its own, so the sketch does not hammer the server with connect()s.
TEST(the_reconnect_when_run_fails_loop_does_not_fight_the_backoff) {
  fake::now = 1000;
  ShimClient wifiClient;
  Transport myTransport(wifiClient);
  MyProtocolWithHandlers myProtocol(myTransport);
  myProtocol.setReconnectDelay(1000, 1000);
  wifiClient.failConnects(1000);
  int sketchConnects = 0;
  myProtocol.connect("your_auth_token", "your-server.com", 8080);
  for (int k = 0; k < 10000; k++) {  // 10 s of loop(), a millisecond each
    fake::advance(1);
    if (!myProtocol.run()) {
      sketchConnects++;
      myProtocol.connect("your_auth_token", "your-server.com", 8080);
    }
  }
  CHECK_EQ(sketchConnects, 0);
  // One attempt per second of backoff (jitter in [0.5 s, 1 s]), plus the first.
  CHECK(wifiClient.connects().size() >= 11u);
  CHECK(wifiClient.connects().size() <= 21u);
}

int main(int argc, char** argv) { return runUnitTests(argc, argv); }
