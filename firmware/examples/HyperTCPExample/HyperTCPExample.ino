// HyperTCPExample: an ESP32 that joins Wi-Fi, logs in to a HyperTCP server,
// reports a sensor reading every few seconds, switches a relay on command
// and prints broadcasts.
//
// Send it a relay command from any client, e.g. with the Python client:
//   client.send("<this device id>", {"command": "control", "device": "relay_1", "action": "toggle"})
// ("action" is "on", "off" or "toggle"); it answers the sender with the relay state.

#include <WiFi.h>
#include <HyperTCPProtocol.h>

// ---- Settings: change these.
const char* WIFI_SSID = "your-ssid";
const char* WIFI_PASSWORD = "your-wifi-password";
const char* HYPERTCP_TOKEN = "your-device-token";  // from `hypertcp token add NAME`
const char* HYPERTCP_HOST = "your-server.example.com";
const uint16_t HYPERTCP_PORT = 8080;

const uint8_t RELAY_PIN = 26;
const uint8_t SENSOR_PIN = 34;
const uint32_t SENSOR_PERIOD_MS = 5000;

// Subclass the protocol to receive messages and connection events.  The
// text hooks hand out the payload object as JSON text; HyperTCPJson reads
// fields from it without a JSON library.  (With ArduinoJson installed, you
// can override onMessageReceived(from, JsonObject&) instead.)
class Device : public HyperTCPProtocol<HyperTCPTransport<WiFiClient>> {
 public:
  explicit Device(HyperTCPTransport<WiFiClient>& transport)
      : HyperTCPProtocol<HyperTCPTransport<WiFiClient>>(transport) {}

 protected:
  void onConnected() override { Serial.println("HyperTCP: logged in"); }

  void onDisconnected() override { Serial.println("HyperTCP: link lost, reconnecting"); }

  void onLoginFailed(uint8_t status) override {
    Serial.print("HyperTCP: login refused, status ");
    Serial.println(status);
  }

  // {"command":"control","device":"relay_1","action":"on"|"off"|"toggle"}
  void onMessageText(const char* from, const char* json, size_t len) override {
    HyperTCPJsonSpan command, action;
    if (!HyperTCPJson::find(json, len, "command", command) ||
        !HyperTCPJson::equals(command, "control") ||
        !HyperTCPJson::find(json, len, "action", action)) {
      Serial.print("Message from ");
      Serial.print(from);
      Serial.print(": ");
      Serial.println(json);
      return;
    }
    if (HyperTCPJson::equals(action, "on")) {
      relayOn = true;
    } else if (HyperTCPJson::equals(action, "off")) {
      relayOn = false;
    } else if (HyperTCPJson::equals(action, "toggle")) {
      relayOn = !relayOn;
    } else {
      return;
    }
    digitalWrite(RELAY_PIN, relayOn ? HIGH : LOW);
    // Tell the sender what the relay does now.
    sendMessage(from, relayOn ? "{\"device\":\"relay_1\",\"state\":\"on\"}"
                              : "{\"device\":\"relay_1\",\"state\":\"off\"}");
  }

  void onBroadcastText(const char* from, const char* json, size_t len) override {
    (void)len;
    Serial.print("Broadcast from ");
    Serial.print(from);
    Serial.print(": ");
    Serial.println(json);
  }

 private:
  bool relayOn = false;
};

WiFiClient wifiClient;  // for TLS: WiFiClientSecure, with setCACert(...)
HyperTCPTransport<WiFiClient> transport(wifiClient);
Device hypertcp(transport);

uint32_t lastReport = 0;

void setup() {
  Serial.begin(115200);
  pinMode(RELAY_PIN, OUTPUT);
  digitalWrite(RELAY_PIN, LOW);

  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  Serial.print("Wi-Fi: connecting");
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
    Serial.print(".");
  }
  Serial.println(" connected");

  // Logs in now and keeps the link up from then on: run() reconnects and
  // logs in again whenever the link drops.
  hypertcp.connect(HYPERTCP_TOKEN, HYPERTCP_HOST, HYPERTCP_PORT);
}

void loop() {
  hypertcp.run();  // never blocks; call it often

  if (hypertcp.connected() && millis() - lastReport >= SENSOR_PERIOD_MS) {
    lastReport = millis();
    char json[96];
    snprintf(json, sizeof json, "{\"sensor\":\"adc\",\"value\":%u,\"uptime_ms\":%lu}",
             static_cast<unsigned>(analogRead(SENSOR_PIN)), static_cast<unsigned long>(lastReport));
    hypertcp.sendToServer(json);
  }
}
