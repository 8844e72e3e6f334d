// protocol_test: the library's receive state machine, login, keepalive,
// reconnect and redirect, driven in-process through ShimClient with the
// fake clock of FakeCore.  No sockets, no real time: every case runs in
// microseconds and exactly the same way each time.
//
//   protocol_test [NAME...]   run the named cases (all without names)
//   protocol_test --list      print the case names

#include <Arduino.h>
#include <HyperTCPProtocol.h>

#include <string>
#include <vector>

#include "FakeCore.h"
#include "ShimClient.h"

#include "UnitTest.h"

namespace unittest {
template <>
struct Show<ShimFrame> {
  static std::string of(const ShimFrame& f) {
    return "{" + std::to_string(f.type) + ", " + std::to_string(f.msgId) + ", " + Show<std::string>::of(f.payload) +
           "}";
  }
};
}  // namespace unittest

namespace {

typedef HyperTCPTransport<ShimClient> Transport;

const char kToken[] = "secret";
// What the library logs in with: JSON, announcing protocol level 2.
const std::string kLogin = "{\"token\":\"secret\",\"proto\":2}";
const std::string kSuccessByte(1, static_cast<char>(HYPER_TCP_STATUS_SUCCESS));

std::string statusByte(uint8_t status) { return std::string(1, static_cast<char>(status)); }

ShimFrame frame(uint8_t type, uint16_t msgId, const std::string& payload = "") {
  ShimFrame f;
  f.type = type;
  f.msgId = msgId;
  f.payload = payload;
  return f;
}

ShimFrame ack(uint16_t msgId) { return frame(HYPER_TCP_CMD_RESPONSE, msgId); }
ShimFrame answer(uint16_t msgId, uint8_t status) {
  return frame(HYPER_TCP_CMD_RESPONSE, msgId, statusByte(status));
}

std::string delivery(const std::string& from, const std::string& payload) {
  return "{\"from\":\"" + from + "\",\"payload\":" + payload + "}";
}

// A device that writes down every hook call, one line each.
class TestDevice : public HyperTCPProtocol<Transport> {
 public:
  explicit TestDevice(Transport& t) : HyperTCPProtocol<Transport>(t), followRedirects(true), quitOn("") {}

  std::vector<std::string> events;
  bool followRedirects;
  std::string quitOn;  // disconnect() from inside the hook that logs this line

  // The events since the last call.
  std::vector<std::string> take() {
    std::vector<std::string> out;
    out.swap(events);
    return out;
  }

 protected:
  void log(const std::string& line) {
    events.push_back(line);
    if (!quitOn.empty() && line == quitOn) disconnect();
  }
  void onConnected() override { log("connected"); }
  void onDisconnected() override { log("disconnected"); }
  void onLoginFailed(uint8_t status) override { log("login-failed " + std::to_string(status)); }
  void onMessageText(const char* from, const char* json, size_t len) override {
    log(std::string("message ") + from + " " + std::string(json, len));
    CHECK_EQ(strlen(json), len);  // NUL-terminated at len
  }
  void onBroadcastText(const char* from, const char* json, size_t len) override {
    log(std::string("broadcast ") + from + " " + std::string(json, len));
  }
  void onResponse(uint16_t msgId, uint8_t status) override {
    log("response " + std::to_string(msgId) + " " + std::to_string(status));
  }
  void onOversizeFrame(uint8_t type, uint16_t msgId, uint16_t length) override {
    log("oversize " + std::to_string(type) + " " + std::to_string(msgId) + " " + std::to_string(length));
  }
  bool onRedirect(const char* host, uint16_t port, bool tls) override {
    log(std::string("redirect ") + host + " " + std::to_string(port) + (tls ? " tls" : ""));
    return followRedirects;
  }
};

// A device, its transport and the shim under it, with the clock reset.
struct Rig {
  ShimClient client;
  Transport transport;
  TestDevice device;

  Rig() : transport(client), device(transport) {
    fake::now = 1000;
    fake::randomHigh = true;
  }

  // connect(), then the server accepts the LOGIN.
  void login() {
    CHECK(device.connect(kToken, "home.example", 8080));
    std::vector<ShimFrame> sent = client.frames();
    CHECK_EQ(sent.size(), 1u);
    if (!sent.empty()) CHECK_EQ(sent[0].type, HYPER_TCP_CMD_LOGIN);
    client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);
    device.run();
    CHECK(device.connected());
    CHECK_EQ(device.take(), std::vector<std::string>{"connected"});
  }

  // Moves the clock and runs once.
  void runAt(uint32_t ms) {
    fake::now = ms;
    device.run();
  }
};

std::vector<ShimFrame> frames(std::initializer_list<ShimFrame> list) { return std::vector<ShimFrame>(list); }
std::vector<std::string> lines(std::initializer_list<std::string> list) {
  return std::vector<std::string>(list);
}

}  // namespace

// ---- Login

TEST(login_sends_json_with_the_token_and_proto_2_as_msg_id_1_and_goes_online) {
  Rig rig;
  CHECK(rig.device.connect(kToken, "home.example", 8080));
  CHECK_EQ(rig.client.connects(), lines({"home.example:8080"}));
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kLogin)}));
  CHECK(!rig.device.connected());
  rig.device.run();  // nothing arrived yet
  CHECK(!rig.device.connected());
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);
  rig.device.run();
  CHECK(rig.device.connected());
  CHECK_EQ(rig.device.take(), lines({"connected"}));
  CHECK_EQ(rig.client.frames().size(), 0u);  // the login answer is not answered
}

TEST(login_carries_the_device_id_when_one_is_set) {
  Rig rig;
  CHECK(rig.device.setDeviceId("kitchen-\"7\""));
  CHECK(rig.device.connect("to\\ken", "home.example", 8080));
  CHECK_EQ(rig.client.frames(),
           frames({frame(HYPER_TCP_CMD_LOGIN, 1,
                         "{\"token\":\"to\\\\ken\",\"proto\":2,\"device_id\":\"kitchen-\\\"7\\\"\"}")}));
  // Cleared, the next login lets the token decide.
  CHECK(rig.device.setDeviceId(nullptr));
  CHECK(rig.device.connect(kToken, "home.example", 8080));
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kLogin)}));
}

TEST(a_token_or_device_id_that_cannot_fit_is_refused) {
  Rig rig;
  const std::string longest(HYPERTCP_MAX_TOKEN_LEN, 't');
  CHECK(rig.device.setDeviceId(std::string(HYPERTCP_MAX_DEVICE_ID_LEN, 'd').c_str()));
  CHECK(!rig.device.setDeviceId(std::string(HYPERTCP_MAX_DEVICE_ID_LEN + 1, 'd').c_str()));
  CHECK(!rig.device.connect((longest + "t").c_str(), "home.example", 8080));
  CHECK(!rig.device.run());  // nothing to do
  CHECK(rig.device.connect(longest.c_str(), "home.example", 8080));
  // Control characters take six bytes each in JSON: with both at their
  // longest the LOGIN would not fit the transmit buffer, so the calls say
  // so (and change nothing) instead of the link retrying forever.
  const std::string controls(HYPERTCP_MAX_DEVICE_ID_LEN, '\x01');
  CHECK(rig.device.setDeviceId(controls.c_str()));
  CHECK(!rig.device.connect(std::string(HYPERTCP_MAX_TOKEN_LEN, '\x02').c_str(), "home.example", 8080));
  CHECK(rig.device.setDeviceId("d"));
  CHECK(rig.device.connect(std::string(HYPERTCP_MAX_TOKEN_LEN, '\x02').c_str(), "home.example", 8080));
  CHECK(!rig.device.setDeviceId(controls.c_str()));
  CHECK_EQ(rig.client.connects().size(), 2u);
}

TEST(login_answer_with_another_msg_id_is_ignored) {
  Rig rig;
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.frames();
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 2, kSuccessByte);
  rig.device.run();
  CHECK(!rig.device.connected());
  CHECK_EQ(rig.device.take().size(), 0u);
}

TEST(invalid_token_waits_the_longest_delay_then_tries_again) {
  Rig rig;
  rig.device.setReconnectDelay(100, 5000);
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, statusByte(HYPER_TCP_STATUS_INVALID_TOKEN));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"login-failed 9"}));
  CHECK(!rig.client.open());
  rig.runAt(1000 + 4999);
  CHECK_EQ(rig.client.connects().size(), 1u);
  rig.runAt(1000 + 5000);
  CHECK_EQ(rig.client.connects().size(), 2u);
  CHECK_EQ(rig.client.frames().back(), frame(HYPER_TCP_CMD_LOGIN, 1, kLogin));
}

TEST(other_login_refusals_back_off) {
  Rig rig;
  rig.device.setReconnectDelay(100, 5000);
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, statusByte(HYPER_TCP_STATUS_NOT_ALLOWED));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"login-failed 6"}));
  rig.runAt(1000 + 99);
  CHECK_EQ(rig.client.connects().size(), 1u);
  rig.runAt(1000 + 100);
  CHECK_EQ(rig.client.connects().size(), 2u);
}

TEST(disconnect_inside_on_login_failed_gives_up) {
  Rig rig;
  rig.device.quitOn = "login-failed 9";
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, statusByte(HYPER_TCP_STATUS_INVALID_TOKEN));
  rig.device.run();
  rig.runAt(10u * 24 * 3600 * 1000);
  CHECK_EQ(rig.client.connects().size(), 1u);
}

TEST(unanswered_login_times_out_and_retries) {
  Rig rig;
  rig.device.setHeartbeat(200, 600);
  rig.device.setReconnectDelay(50, 50);
  rig.device.connect(kToken, "home.example", 8080);
  rig.runAt(1000 + 599);
  CHECK(rig.client.open());
  rig.runAt(1000 + 600);
  CHECK(!rig.client.open());
  CHECK_EQ(rig.device.take().size(), 0u);  // never online: no onDisconnected
  rig.runAt(1000 + 650);
  CHECK_EQ(rig.client.connects().size(), 2u);
}

// ---- Challenge login

namespace {
const std::string kNonce = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const std::string kChallengeRequest = "{\"proto\":2,\"challenge\":true}";
// From the Python reference (tests/test_firmware.py, challenge_proof).
const std::string kKeyId = "2bb80d537b1da3e3";  // SHA-256("secret"), first 16 hex digits
const std::string kProof = "65f6de0a915af03471fcfc0921d864eb4d2e1a567304776a46761410f9d6bac8";
const std::string kProofAsKitchen = "7fd0eedb8ab3802b3a86e73d5e846fde2cc5c2388c02b7fbf653a00457857f70";

std::string challenge(const std::string& nonce) { return "{\"nonce\":\"" + nonce + "\"}"; }
}  // namespace

TEST(challenge_login_keeps_the_token_off_the_wire) {
  Rig rig;
  rig.device.useChallengeLogin();
  CHECK(rig.device.connect(kToken, "home.example", 8080));
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kChallengeRequest)}));
  rig.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  rig.device.run();
  CHECK(!rig.device.connected());
  CHECK_EQ(rig.client.frames(),
           frames({frame(HYPER_TCP_CMD_LOGIN, 2,
                         "{\"proto\":2,\"key\":\"" + kKeyId + "\",\"proof\":\"" + kProof + "\"}")}));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 2, kSuccessByte);
  rig.device.run();
  CHECK(rig.device.connected());
  CHECK_EQ(rig.device.take(), lines({"connected"}));
  // The next message takes the next msg_id after the two LOGINs.
  CHECK_EQ(rig.device.sendToServer("{}"), 3);
}

TEST(the_challenge_proof_covers_the_device_id) {
  Rig rig;
  rig.device.useChallengeLogin();
  rig.device.setDeviceId("kitchen");
  rig.device.connect(kToken, "home.example", 8080);
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kChallengeRequest)}));
  rig.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  rig.device.run();
  CHECK_EQ(rig.client.frames(),
           frames({frame(HYPER_TCP_CMD_LOGIN, 2,
                         "{\"proto\":2,\"key\":\"" + kKeyId + "\",\"proof\":\"" + kProofAsKitchen +
                             "\",\"device_id\":\"kitchen\"}")}));
}

TEST(a_refused_proof_fails_the_login) {
  Rig rig;
  rig.device.setReconnectDelay(100, 5000);
  rig.device.useChallengeLogin();
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 2, statusByte(HYPER_TCP_STATUS_INVALID_TOKEN));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"login-failed 9"}));
  CHECK(!rig.client.open());
  rig.runAt(1000 + 5000);  // and asks again, for a fresh nonce, after the longest delay
  CHECK_EQ(rig.client.connects().size(), 2u);
  CHECK_EQ(rig.client.frames().back(), frame(HYPER_TCP_CMD_LOGIN, 1, kChallengeRequest));
}

TEST(a_challenge_without_a_usable_nonce_fails_the_login) {
  const std::string bad[] = {
      "{}",
      challenge(kNonce.substr(1)),                     // 63 digits
      challenge(kNonce + "0"),                         // 65
      challenge("A" + kNonce.substr(1)),               // not lowercase
      challenge("g" + kNonce.substr(1)),               // not hex
      "{\"nonce\":12345}",
      "not json",
  };
  for (const std::string& body : bad) {
    Rig rig;
    rig.device.useChallengeLogin();
    rig.device.connect(kToken, "home.example", 8080);
    rig.client.frames();
    rig.client.respond(HYPER_TCP_CMD_LOGIN, 1, body);
    rig.device.run();
    CHECK_EQ(rig.device.take(), lines({"login-failed 11"}));
    CHECK_EQ(rig.client.frames().size(), 0u);  // no proof for that
    CHECK(!rig.client.open());
  }
}

TEST(a_server_login_frame_is_answered_illegal_command_otherwise) {
  Rig rig;
  rig.login();  // a token login: no challenge asked for
  rig.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  rig.device.run();
  CHECK_EQ(rig.client.frames(), frames({answer(1, HYPER_TCP_STATUS_ILLEGAL_COMMAND)}));
  // Asked for, but once logged in a challenge is not answered either.
  Rig again;
  again.device.useChallengeLogin();
  again.device.connect(kToken, "home.example", 8080);
  again.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  again.client.respond(HYPER_TCP_CMD_RESPONSE, 2, kSuccessByte);
  again.client.respond(HYPER_TCP_CMD_LOGIN, 1, challenge(kNonce));
  again.device.run();
  CHECK(again.device.connected());
  std::vector<ShimFrame> sent = again.client.frames();
  CHECK_EQ(sent.size(), 3u);
  if (sent.size() == 3) CHECK_EQ(sent[2], answer(1, HYPER_TCP_STATUS_ILLEGAL_COMMAND));
}

TEST(challenge_login_can_be_turned_off_again) {
  Rig rig;
  rig.device.useChallengeLogin(true);
  rig.device.useChallengeLogin(false);
  rig.login();
}

// ---- Answers the library writes

TEST(ping_is_answered_with_an_empty_response) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_PING, 777);
  rig.device.run();
  CHECK_EQ(rig.client.frames(), frames({ack(777)}));
  CHECK_EQ(rig.device.take().size(), 0u);
}

TEST(message_is_delivered_then_acknowledged) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 41, delivery("alice", "{\"switch\":\"on\"}"));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"message alice {\"switch\":\"on\"}"}));
  CHECK_EQ(rig.client.frames(), frames({ack(41)}));
}

TEST(broadcast_is_delivered_then_acknowledged) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_BROADCAST, 42, delivery("ops", "{\"notice\":\"at 5\"}"));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"broadcast ops {\"notice\":\"at 5\"}"}));
  CHECK_EQ(rig.client.frames(), frames({ack(42)}));
}

TEST(sender_id_escapes_are_decoded) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 5,
                     "{\"payload\":{\"n\":1},\"from\":\"a\\u00e9\\\"b\"}");
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"message a\xc3\xa9\"b {\"n\":1}"}));
}

TEST(delivery_before_login_is_refused_not_authenticated) {
  Rig rig;
  rig.device.connect(kToken, "home.example", 8080);
  rig.client.frames();
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 3, delivery("alice", "{}"));
  rig.device.run();
  CHECK_EQ(rig.client.frames(), frames({answer(3, HYPER_TCP_STATUS_NOT_AUTHENTICATED)}));
  CHECK_EQ(rig.device.take().size(), 0u);
}

TEST(malformed_deliveries_are_answered_11_and_the_link_lives) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 21, "{\"from\":\"x\"}");
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 22, "not json");
  rig.client.respond(HYPER_TCP_CMD_BROADCAST, 23, "{\"from\":\"x\",\"payload\":[1]}");
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 24, "{\"from\":7,\"payload\":{}}");
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 25, "{\"from\":\"\\u0000\",\"payload\":{}}");
  rig.client.respond(77, 26);
  // A NUL byte inside the payload (outside any string, where the scanner
  // does not look): the hooks' text would be cut short.  Found by fuzz_protocol.
  rig.client.respond(HYPER_TCP_CMD_BROADCAST, 28, std::string("{\"from\":\"x\",\"payload\":{\"a\":[1\0]}}", 33));
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 27, delivery("alice", "{\"ok\":1}"));
  rig.device.run();
  CHECK_EQ(rig.client.frames(), frames({answer(21, 11), answer(22, 11), answer(23, 11), answer(24, 11),
                                        answer(25, 11), answer(26, HYPER_TCP_STATUS_ILLEGAL_COMMAND),
                                        answer(28, 11), ack(27)}));
  CHECK_EQ(rig.device.take(), lines({"message alice {\"ok\":1}"}));
  CHECK(rig.device.connected());
}

TEST(responses_reach_on_response_with_their_status) {
  Rig rig;
  rig.login();
  uint16_t a = rig.device.sendMessage("lamp", "{\"x\":1}");
  uint16_t b = rig.device.sendMessage("gone", "{\"x\":2}");
  uint16_t c = rig.device.sendMessage("queue", "{\"x\":3}");
  CHECK_EQ(a, 2);
  CHECK_EQ(b, 3);
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, a);
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, b, statusByte(HYPER_TCP_STATUS_DEVICE_NOT_IN_NETWORK));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, c, statusByte(HYPER_TCP_STATUS_STORED));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"response 2 200", "response 3 7", "response 4 202"}));
  // Nobody answers a RESPONSE: only the three messages went out.
  CHECK_EQ(rig.client.frames().size(), 3u);
}

// ---- Stream shapes

TEST(oversize_frames_are_skipped_byte_exactly_and_answered_11) {
  Rig rig;
  rig.login();
  // The bodies are full of bytes that parse as headers; a reader that lost
  // count would see phantom frames.
  const std::string phantom = shimFrame(HYPER_TCP_CMD_PING, 0x0606);
  std::string body;
  while (body.size() < 3000) body += phantom;
  const std::string fits(HYPERTCP_RX_BUFFER_SIZE - delivery("alice", "{\"p\":\"\"}").size(), 'x');
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 7, delivery("alice", "{\"p\":\"" + fits + "\"}"));
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 8, body.substr(0, HYPERTCP_RX_BUFFER_SIZE + 1));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 9, body.substr(0, 2000));  // oversize RESPONSE: not answered
  rig.client.respond(HYPER_TCP_CMD_BROADCAST, 10, body.substr(0, 3000));
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 11, delivery("bob", "{\"after\":true}"));
  for (int i = 0; i < 5; i++) rig.device.run();  // the read budget spreads it over runs
  CHECK_EQ(rig.client.unread(), 0u);
  std::vector<std::string> events = rig.device.take();
  CHECK_EQ(events.size(), 5u);
  if (events.size() == 5) {
    CHECK_EQ(events[0].substr(0, 14), std::string("message alice "));
    CHECK_EQ(events[0].size(), 14 + fits.size() + 8);
    CHECK_EQ(events[1], std::string("oversize 30 8 1025"));
    CHECK_EQ(events[2], std::string("oversize 0 9 2000"));
    CHECK_EQ(events[3], std::string("oversize 50 10 3000"));
    CHECK_EQ(events[4], std::string("message bob {\"after\":true}"));
  }
  CHECK_EQ(rig.client.frames(), frames({ack(7), answer(8, 11), answer(10, 11), ack(11)}));
}

TEST(a_frame_split_into_single_bytes_across_runs) {
  Rig rig;
  rig.login();
  const std::string bytes = shimFrame(HYPER_TCP_CMD_JSON_MESSAGE, 4321, delivery("alice", "{\"t\":\"slow\"}"));
  for (size_t i = 0; i < bytes.size(); i++) {
    CHECK_EQ(rig.device.take().size(), 0u);
    rig.client.respond(bytes.substr(i, 1));
    rig.device.run();
  }
  CHECK_EQ(rig.device.take(), lines({"message alice {\"t\":\"slow\"}"}));
  CHECK_EQ(rig.client.frames(), frames({ack(4321)}));
}

TEST(a_hundred_frames_in_one_segment) {
  Rig rig;
  rig.login();
  std::string segment;
  std::vector<std::string> expected;
  std::vector<ShimFrame> acks;
  for (int n = 0; n < 100; n++) {
    const uint16_t id = static_cast<uint16_t>(1000 + n);
    const std::string payload = "{\"n\":" + std::to_string(n) + "}";
    if (n % 10 == 9) {
      segment += shimFrame(HYPER_TCP_CMD_PING, id);
    } else if (n % 3 == 0) {
      segment += shimFrame(HYPER_TCP_CMD_BROADCAST, id, delivery("carol", payload));
      expected.push_back("broadcast carol " + payload);
    } else {
      segment += shimFrame(HYPER_TCP_CMD_JSON_MESSAGE, id, delivery("alice", payload));
      expected.push_back("message alice " + payload);
    }
    acks.push_back(ack(id));
  }
  rig.client.respond(segment);
  // As many runs as the read budget needs, and no more.
  const size_t runs = (segment.size() + HYPERTCP_READ_BUDGET - 1) / HYPERTCP_READ_BUDGET;
  for (size_t k = 0; k < runs; k++) rig.device.run();
  CHECK_EQ(rig.client.unread(), 0u);
  CHECK_EQ(rig.device.take(), expected);
  CHECK_EQ(rig.client.frames(), acks);
}

TEST(one_run_reads_at_most_the_read_budget) {
  Rig rig;
  rig.login();
  std::string segment;
  const std::string one = shimFrame(HYPER_TCP_CMD_PING, 5);
  while (segment.size() < 3 * HYPERTCP_READ_BUDGET) segment += one;
  rig.client.respond(segment);
  rig.device.run();
  CHECK_EQ(segment.size() - rig.client.unread(), static_cast<size_t>(HYPERTCP_READ_BUDGET));
  rig.device.run();
  CHECK_EQ(segment.size() - rig.client.unread(), 2u * HYPERTCP_READ_BUDGET);
}

TEST(a_hook_that_disconnects_stops_the_rest_of_the_segment) {
  Rig rig;
  rig.login();
  rig.device.quitOn = "message alice {\"n\":1}";
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 1, delivery("alice", "{\"n\":1}"));
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 2, delivery("alice", "{\"n\":2}"));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"message alice {\"n\":1}", "disconnected"}));
  CHECK(!rig.client.open());
  rig.runAt(10u * 24 * 3600 * 1000);
  CHECK_EQ(rig.client.connects().size(), 1u);  // stopped for good
}

// ---- Keepalive

TEST(heartbeat_pings_after_quiet_and_keeps_its_answer) {
  Rig rig;
  rig.device.setHeartbeat(30000, 45000);
  rig.login();
  rig.runAt(1000 + 29999);
  CHECK_EQ(rig.client.frames().size(), 0u);
  rig.runAt(1000 + 30000);
  std::vector<ShimFrame> sent = rig.client.frames();
  CHECK_EQ(sent.size(), 1u);
  if (sent.size() != 1) return;
  CHECK_EQ(sent[0].type, HYPER_TCP_CMD_PING);
  CHECK_EQ(sent[0].payload, std::string());
  CHECK(sent[0].msgId != 0);
  rig.runAt(1000 + 30001);
  CHECK_EQ(rig.client.frames().size(), 0u);  // one ping per interval, not per run
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, sent[0].msgId);
  rig.runAt(1000 + 31000);
  CHECK_EQ(rig.device.take().size(), 0u);  // the heartbeat's answer is the library's own
  CHECK(rig.device.connected());
}

TEST(traffic_postpones_the_heartbeat) {
  Rig rig;
  rig.device.setHeartbeat(1000, 5000);
  rig.login();
  for (uint32_t t = 1500; t < 6000; t += 500) {
    rig.client.respond(HYPER_TCP_CMD_PING, 9);
    rig.device.sendToServer("{\"t\":1}");
    rig.runAt(t);
  }
  for (const ShimFrame& f : rig.client.frames()) CHECK(f.type != HYPER_TCP_CMD_PING);
}

TEST(a_silent_server_is_dropped_and_logged_in_again) {
  Rig rig;
  rig.device.setHeartbeat(200, 600);
  rig.device.setReconnectDelay(50, 100);
  fake::now = 0xFFFFFFFFu - 300;  // the timers run across millis()'s wrap
  CHECK(rig.device.connect(kToken, "home.example", 8080));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);
  rig.device.run();
  const uint32_t online = fake::now;
  CHECK_EQ(rig.device.take(), lines({"connected"}));
  rig.client.frames();
  rig.runAt(online + 200);
  CHECK_EQ(rig.client.frames().size(), 1u);  // the ping
  rig.runAt(online + 599);
  CHECK(rig.device.connected());
  CHECK_EQ(rig.client.frames().size(), 1u);  // another ping, 200 ms after the first
  rig.runAt(online + 600);
  CHECK(!rig.device.connected());
  CHECK_EQ(rig.device.take(), lines({"disconnected"}));
  CHECK(!rig.client.open());
  rig.runAt(online + 600 + 50);  // the shortest jittered delay is 25..50 ms
  CHECK_EQ(rig.client.connects().size(), 2u);
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kLogin)}));
}

TEST(peer_close_drops_the_link_after_reading_what_is_left) {
  Rig rig;
  rig.login();
  rig.client.respond(HYPER_TCP_CMD_JSON_MESSAGE, 8, delivery("alice", "{\"last\":1}"));
  rig.client.closeByPeer();
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"message alice {\"last\":1}", "disconnected"}));
}

TEST(a_failed_write_drops_the_link) {
  Rig rig;
  rig.login();
  rig.client.failWrites(true);
  CHECK_EQ(rig.device.sendToServer("{\"a\":1}"), 0);
  CHECK_EQ(rig.device.take().size(), 0u);  // sends never call hooks
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"disconnected"}));
}

// ---- Reconnecting

TEST(reconnect_delays_double_up_to_the_cap_with_jitter) {
  Rig rig;
  rig.device.setReconnectDelay(1000, 8000);
  rig.client.failConnects(100);
  fake::randomHigh = true;  // jitter at the top: the full delay
  CHECK(!rig.device.connect(kToken, "home.example", 8080));
  const uint32_t full[] = {1000, 2000, 4000, 8000, 8000, 8000};
  uint32_t at = fake::now;
  for (size_t k = 0; k < sizeof full / sizeof full[0]; k++) {
    const size_t before = rig.client.connects().size();
    rig.runAt(at + full[k] - 1);
    CHECK_EQ(rig.client.connects().size(), before);
    rig.runAt(at + full[k]);
    CHECK_EQ(rig.client.connects().size(), before + 1);
    at += full[k];
  }
  // Jitter at the bottom: half of each delay.
  Rig low;
  low.device.setReconnectDelay(1000, 8000);
  low.client.failConnects(100);
  fake::randomHigh = false;
  low.device.connect(kToken, "home.example", 8080);
  at = fake::now;
  const uint32_t half[] = {500, 1000, 2000, 4000, 4000};
  for (size_t k = 0; k < sizeof half / sizeof half[0]; k++) {
    const size_t before = low.client.connects().size();
    low.runAt(at + half[k] - 1);
    CHECK_EQ(low.client.connects().size(), before);
    low.runAt(at + half[k]);
    CHECK_EQ(low.client.connects().size(), before + 1);
    at += half[k];
  }
}

TEST(a_login_resets_the_backoff) {
  Rig rig;
  rig.device.setReconnectDelay(1000, 60000);
  rig.client.failConnects(3);  // waits 1 s, 2 s, 4 s
  rig.device.connect(kToken, "home.example", 8080);
  rig.runAt(2000);
  rig.runAt(4000);
  rig.runAt(8000);
  CHECK_EQ(rig.client.connects().size(), 4u);
  CHECK(rig.client.open());
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"connected"}));
  rig.client.closeByPeer();
  rig.runAt(9000);
  CHECK_EQ(rig.device.take(), lines({"disconnected"}));
  rig.runAt(9000 + 1000);  // back to the shortest delay
  CHECK_EQ(rig.client.connects().size(), 5u);
}

// ---- Redirect

TEST(redirect_moves_the_link_and_returns_home_when_it_ends) {
  Rig rig;
  rig.login();
  rig.client.frames();
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 12, "{\"server\":\"node-2\",\"port\":9000}");
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"redirect node-2 9000", "disconnected"}));
  CHECK(!rig.client.open());
  rig.device.run();  // the next run() goes there at once, same token
  CHECK_EQ(rig.client.connects(), lines({"home.example:8080", "node-2:9000"}));
  CHECK_EQ(rig.client.frames(), frames({frame(HYPER_TCP_CMD_LOGIN, 1, kLogin)}));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"connected"}));
  // That link ends: the device goes back to the address connect() gave.
  rig.client.closeByPeer();
  rig.device.run();
  rig.runAt(fake::now + 1000);
  CHECK_EQ(rig.client.connects().back(), std::string("home.example:8080"));
}

TEST(redirect_before_the_login_answer_is_followed) {
  Rig rig;
  rig.device.connect(kToken, "balancer", 7000);
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 1, "{\"server\":\"node-1\",\"port\":8081,\"tls\":true}");
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, 1, kSuccessByte);  // not read: the link moved
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"redirect node-1 8081 tls"}));
  rig.device.run();
  CHECK_EQ(rig.client.connects().back(), std::string("node-1:8081"));
}

TEST(a_refused_or_unusable_redirect_keeps_the_link) {
  Rig rig;
  rig.login();
  rig.device.followRedirects = false;
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 2, "{\"server\":\"node-2\",\"port\":9000}");
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 3, "{\"server\":\"node-2\"}");
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 4, "{\"server\":\"node-2\",\"port\":70000}");
  rig.client.respond(HYPER_TCP_CMD_REDIRECT, 5, "{\"server\":\"\",\"port\":1}");
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"redirect node-2 9000"}));
  CHECK(rig.device.connected());
  CHECK_EQ(rig.client.connects().size(), 1u);
}

// ---- Sending

TEST(msg_id_wraps_from_65535_to_1_and_is_never_0) {
  Rig rig;
  rig.login();
  std::vector<uint16_t> ids;
  for (int k = 0; k < 65536; k++) ids.push_back(rig.device.sendMessage("bob", "{}"));
  // LOGIN took 1; messages run 2..65535, then wrap to 1, skipping 0.
  CHECK_EQ(ids.front(), 2);
  CHECK_EQ(ids[65533], 65535);
  CHECK_EQ(ids[65534], 1);
  CHECK_EQ(ids[65535], 2);
  bool zero = false;
  for (uint16_t id : ids) zero = zero || id == 0;
  CHECK(!zero);
  std::vector<ShimFrame> sent = rig.client.frames();
  CHECK_EQ(sent.size(), 65536u);
  if (sent.size() == 65536) CHECK_EQ(sent[65534].msgId, 1);
}

TEST(sends_build_the_envelope_and_escape_the_target) {
  Rig rig;
  rig.login();
  rig.device.sendMessage("la\"mp\n", "{\"on\":true}");
  rig.device.broadcastMessage("{\"all\":1}");
  rig.device.sendToServer("{\"command\":\"ping\"}");
  CHECK_EQ(rig.client.frames(),
           frames({frame(HYPER_TCP_CMD_JSON_MESSAGE, 2, "{\"targetId\":\"la\\\"mp\\u000a\",\"payload\":{\"on\":true}}"),
                   frame(HYPER_TCP_CMD_BROADCAST, 3, "{\"targetId\":\"broadcast\",\"payload\":{\"all\":1}}"),
                   frame(HYPER_TCP_CMD_JSON_MESSAGE, 4, "{\"targetId\":\"server\",\"payload\":{\"command\":\"ping\"}}")}));
}

TEST(a_send_that_cannot_go_returns_0_and_sends_nothing) {
  Rig rig;
  CHECK_EQ(rig.device.sendMessage("bob", "{}"), 0);  // not connected
  rig.login();
  const std::string big = "{\"p\":\"" + std::string(HYPERTCP_TX_BUFFER_SIZE, 'x') + "\"}";
  CHECK_EQ(rig.device.sendMessage("bob", big.c_str()), 0);
  CHECK_EQ(rig.device.sendMessage("bob", ""), 0);
  CHECK_EQ(rig.device.sendMessage(nullptr, "{}"), 0);
  CHECK_EQ(rig.client.frames().size(), 0u);
  CHECK(rig.device.connected());
  CHECK_EQ(rig.device.sendMessage("bob", "{}"), 2);  // the failed ones took no msg_id
}

TEST(qos_1_puts_qos_in_the_envelope_and_stored_reaches_on_response) {
  Rig rig;
  rig.login();
  const uint16_t stored = rig.device.sendMessage("lamp", "{\"on\":1}", HYPER_TCP_QOS_1);
  const uint16_t plain = rig.device.sendMessage("lamp", "{\"on\":2}", HYPER_TCP_QOS_0);
  const uint16_t counted = rig.device.sendMessage("lamp", "{\"on\":3}xyz", 8, HYPER_TCP_QOS_1);
  CHECK_EQ(rig.client.frames(),
           frames({frame(HYPER_TCP_CMD_JSON_MESSAGE, stored, "{\"targetId\":\"lamp\",\"payload\":{\"on\":1},\"qos\":1}"),
                   frame(HYPER_TCP_CMD_JSON_MESSAGE, plain, "{\"targetId\":\"lamp\",\"payload\":{\"on\":2}}"),
                   frame(HYPER_TCP_CMD_JSON_MESSAGE, counted,
                         "{\"targetId\":\"lamp\",\"payload\":{\"on\":3},\"qos\":1}")}));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, stored, statusByte(HYPER_TCP_STATUS_STORED));
  rig.client.respond(HYPER_TCP_CMD_RESPONSE, plain, statusByte(HYPER_TCP_STATUS_DEVICE_NOT_IN_NETWORK));
  rig.device.run();
  CHECK_EQ(rig.device.take(), lines({"response " + std::to_string(stored) + " 202",
                                     "response " + std::to_string(plain) + " 7"}));
}

TEST(a_number_where_the_qos_goes_is_a_length_and_sends_nothing) {
  Rig rig;
  rig.login();
  // sendMessage(target, json, 1) is the (json, length) overload: one byte
  // cannot be a JSON object, so nothing is sent rather than "{".
  CHECK_EQ(rig.device.sendMessage("lamp", "{\"on\":1}", 1), 0);
  CHECK_EQ(rig.device.sendMessage("lamp", "{\"on\":1}", 0), 0);
  CHECK_EQ(rig.client.frames().size(), 0u);
}

int main(int argc, char** argv) { return runUnitTests(argc, argv); }
