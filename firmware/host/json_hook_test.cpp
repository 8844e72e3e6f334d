// json_hook_test: the original API's JsonObject hooks and sends, in-process
// through ShimClient.  The normal build uses firmware/host/fakejson (a test
// double of ArduinoJson 6: the test machines have no ArduinoJson); the same
// cases run against real ArduinoJson 6 and 7 on demand (ARDUINOJSON_DIR, see
// tests/test_firmware_arduinojson.py), with the expectations below following
// the version and HYPERTCP_JSON_DOC_SIZE.

#include <Arduino.h>
#include <ArduinoJson.h>
#include <HyperTCPProtocol.h>

#include <string>
#include <vector>

#include "FakeCore.h"
#include "ShimClient.h"
#include "UnitTest.h"

#if !HYPERTCP_HAS_ARDUINOJSON
#error "json_hook_test needs ArduinoJson (or the test double in fakejson/)"
#endif


namespace {

typedef HyperTCPTransport<ShimClient> Transport;

// A sketch in the original style: only the JsonObject hooks.
class Sketch : public HyperTCPProtocol<Transport> {
 public:
  explicit Sketch(Transport& t) : HyperTCPProtocol<Transport>(t) {}
  std::vector<std::string> events;

  void onMessageReceived(const char* from, JsonObject& payload) override {
    events.push_back(std::string("object ") + from + " " + std::to_string(payload.size()));
  }
  void onBroadcastMessage(const char* from, JsonObject& payload) override {
    events.push_back(std::string("broadcast-object ") + from + " " + std::to_string(payload.size()));
  }
  void onJsonError(const char* from, const char* json, size_t len, bool broadcast,
                   DeserializationError error) override {
    // The text is still there to fall back on.
    HyperTCPJsonSpan last;
    const bool readable = HyperTCPJson::find(json, len, "k29", last);
    events.push_back(std::string("json-error ") + from + " " + error.c_str() + (broadcast ? " broadcast" : "") +
                     (readable ? " readable" : ""));
  }
};

struct Rig {
  ShimClient client;
  Transport transport;
  Sketch sketch;

  Rig() : transport(client), sketch(transport) {
    fake::now = 1000;
    sketch.connect("secret", "home.example", 8080);
    client.respond(HYPER_TCP_CMD_RESPONSE, 1, std::string(1, static_cast<char>(HYPER_TCP_STATUS_SUCCESS)));
    sketch.run();
    CHECK(sketch.connected());
    client.frames();
  }

  // Delivers `payload` from `from` as frame `msgId`; returns the answer's
  // status (200 for an empty RESPONSE).
  int deliver(uint8_t type, uint16_t msgId, const std::string& from, const std::string& payload) {
    client.respond(type, msgId, "{\"from\":\"" + from + "\",\"payload\":" + payload + "}");
    sketch.run();
    std::vector<ShimFrame> sent = client.frames();
    CHECK_EQ(sent.size(), 1u);
    if (sent.size() != 1 || sent[0].type != HYPER_TCP_CMD_RESPONSE || sent[0].msgId != msgId) return -1;
    return sent[0].payload.empty() ? 200 : static_cast<uint8_t>(sent[0].payload[0]);
  }

  std::vector<std::string> take() {
    std::vector<std::string> out;
    out.swap(sketch.events);
    return out;
  }
};

// Thirty members, "k00".."k29", in exactly 288 bytes of JSON.
std::string thirtyKeys() {
  std::string text = "{";
  for (int k = 0; k < 29; k++) text += "\"k" + std::string(k < 10 ? "0" : "") + std::to_string(k) + "\":" + std::to_string(k) + ",";
  text += "\"k29\":\"";
  text += std::string(288 - text.size() - 2, 'x') + "\"}";
  return text;
}

// With ArduinoJson 6 the document is HYPERTCP_JSON_DOC_SIZE bytes, and this
// payload needs a slot per member (16 bytes on a 32-bit chip, 32 on this
// 64-bit host) plus 148 bytes of copied strings: 1108 bytes here, 628 on an
// ESP32.  ArduinoJson 7 grows its document on the heap.
const bool kThirtyKeysFit =
    ARDUINOJSON_VERSION_MAJOR >= 7 || 30 * 4 * sizeof(void*) + 148 <= HYPERTCP_JSON_DOC_SIZE;

}  // namespace

TEST(a_small_payload_reaches_on_message_received_and_is_acknowledged) {
  Rig rig;
  CHECK_EQ(rig.deliver(HYPER_TCP_CMD_JSON_MESSAGE, 7, "alice", "{\"switch\":\"on\",\"n\":[1,2]}"), 200);
  CHECK_EQ(rig.take(), std::vector<std::string>{"object alice 2"});
}

TEST(a_broadcast_reaches_on_broadcast_message) {
  Rig rig;
  CHECK_EQ(rig.deliver(HYPER_TCP_CMD_BROADCAST, 8, "ops", "{\"notice\":\"at 5\"}"), 200);
  CHECK_EQ(rig.take(), std::vector<std::string>{"broadcast-object ops 1"});
}

TEST(thirty_keys_in_288_bytes_are_delivered_or_reported_never_dropped) {
  Rig rig;
  const std::string payload = thirtyKeys();
  CHECK_EQ(payload.size(), 288u);
  const int status = rig.deliver(HYPER_TCP_CMD_JSON_MESSAGE, 9, "alice", payload);
  printf("# thirty keys: %s\n", kThirtyKeysFit ? "delivered" : "reported");
  if (kThirtyKeysFit) {
    CHECK_EQ(status, 200);
    CHECK_EQ(rig.take(), std::vector<std::string>{"object alice 30"});
  } else {
    // Reported to the sketch, with the text still readable, and refused to
    // the sender instead of acknowledged.
    CHECK_EQ(status, HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
    CHECK_EQ(rig.take(), std::vector<std::string>{"json-error alice NoMemory readable"});
  }
  CHECK(rig.sketch.connected());
}

TEST(nesting_past_arduinojson_limit_is_reported) {
  Rig rig;
  // Eleven levels below the payload object: valid JSON, and within the
  // library's own scanner limit, but past ArduinoJson's default of 10.
  const std::string deep = "{\"a\":" + std::string(11, '[') + "1" + std::string(11, ']') + "}";
  CHECK_EQ(rig.deliver(HYPER_TCP_CMD_BROADCAST, 10, "mallory", deep), HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY);
  CHECK_EQ(rig.take(), std::vector<std::string>{"json-error mallory TooDeep broadcast"});
  // The link lives on, and the next message is delivered.
  CHECK_EQ(rig.deliver(HYPER_TCP_CMD_JSON_MESSAGE, 11, "alice", "{\"ok\":true}"), 200);
  CHECK_EQ(rig.take(), std::vector<std::string>{"object alice 1"});
}

TEST(json_object_sends_build_the_envelope) {
  Rig rig;
#if ARDUINOJSON_VERSION_MAJOR >= 7
  JsonDocument doc;
#else
  StaticJsonDocument<256> doc;
#endif
  CHECK(!deserializeJson(doc, "{\"temperature\":25.5}"));
  JsonObject object = doc.as<JsonObject>();
  CHECK_EQ(rig.sketch.sendMessage("server", object), 2);
  CHECK_EQ(rig.sketch.broadcastMessage(object), 3);
  CHECK_EQ(rig.sketch.sendToServer(object), 4);
  std::vector<ShimFrame> sent = rig.client.frames();
  CHECK_EQ(sent.size(), 3u);
  if (sent.size() != 3) return;
  CHECK_EQ(sent[0].payload, std::string("{\"targetId\":\"server\",\"payload\":{\"temperature\":25.5}}"));
  CHECK_EQ(sent[1].type, HYPER_TCP_CMD_BROADCAST);
  CHECK_EQ(sent[1].payload, std::string("{\"targetId\":\"broadcast\",\"payload\":{\"temperature\":25.5}}"));
  CHECK_EQ(sent[2].payload, sent[0].payload);
  CHECK_EQ(rig.sketch.sendMessage("lamp", object, HYPER_TCP_QOS_1), 5);
  sent = rig.client.frames();
  CHECK_EQ(sent.size(), 1u);
  if (!sent.empty()) {
    CHECK_EQ(sent[0].payload, std::string("{\"targetId\":\"lamp\",\"payload\":{\"temperature\":25.5},\"qos\":1}"));
  }
}

TEST(a_json_object_larger_than_the_transmit_buffer_is_not_sent) {
  Rig rig;
  const std::string big = "{\"p\":\"" + std::string(HYPERTCP_TX_BUFFER_SIZE, 'x') + "\"}";
#if ARDUINOJSON_VERSION_MAJOR >= 7
  JsonDocument doc;
#else
  StaticJsonDocument<2 * HYPERTCP_TX_BUFFER_SIZE> doc;
#endif
  CHECK(!deserializeJson(doc, big.c_str()));
  CHECK_EQ(rig.sketch.sendMessage("bob", doc.as<JsonObject>()), 0);
  CHECK_EQ(rig.client.written().size(), 0u);
}

int main(int argc, char** argv) { return runUnitTests(argc, argv); }
