#include "WiFi.h"

HostWiFi WiFi;
