// WiFi.h for the host: the ESP32 Wi-Fi calls the example sketch makes,
// stubbed (the host is always "connected"), and WiFiClient as a PosixClient,
// so the sketch users copy is compiled here exactly as written.

#ifndef HYPERTCP_HOST_WIFI_H
#define HYPERTCP_HOST_WIFI_H

#include "Arduino.h"
#include "PosixClient.h"

typedef enum { WL_IDLE_STATUS = 0, WL_CONNECTED = 3, WL_CONNECT_FAILED = 4, WL_DISCONNECTED = 6 } wl_status_t;
typedef enum { WIFI_OFF = 0, WIFI_STA = 1 } wifi_mode_t;

class WiFiClient : public PosixClient {};

class HostWiFi {
 public:
  bool mode(wifi_mode_t m) {
    (void)m;
    return true;
  }
  wl_status_t begin(const char* ssid, const char* passphrase) {
    (void)ssid;
    (void)passphrase;
    return WL_CONNECTED;
  }
  wl_status_t status() { return WL_CONNECTED; }
  bool setAutoReconnect(bool on) {
    (void)on;
    return true;
  }
};

extern HostWiFi WiFi;

#endif  // HYPERTCP_HOST_WIFI_H
