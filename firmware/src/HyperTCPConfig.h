// HyperTCPConfig.h - build-time configuration of the HyperTCP library.
//
// Define any of these before including HyperTCPProtocol.h (or with -D in the
// build flags) to change them.  Also decides whether ArduinoJson is present.

#ifndef HYPERTCP_CONFIG_H
#define HYPERTCP_CONFIG_H

#include <Arduino.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>


#if !defined(HYPERTCP_NO_ARDUINOJSON) && defined(__has_include)
#if __has_include(<ArduinoJson.h>)
#include <ArduinoJson.h>
#define HYPERTCP_HAS_ARDUINOJSON 1
#endif
#endif
#ifndef HYPERTCP_HAS_ARDUINOJSON
#define HYPERTCP_HAS_ARDUINOJSON 0
#endif


// Largest payload received, in bytes.  Larger frames are skipped.
#ifndef HYPERTCP_RX_BUFFER_SIZE
#define HYPERTCP_RX_BUFFER_SIZE 1024
#endif

// Largest frame sent, header included.  A send that does not fit fails
// (returns 0) and sends nothing.
#ifndef HYPERTCP_TX_BUFFER_SIZE
#define HYPERTCP_TX_BUFFER_SIZE 1024
#endif

// Longest token, device id (setDeviceId()) and host name kept for
// reconnecting.
#ifndef HYPERTCP_MAX_TOKEN_LEN
#define HYPERTCP_MAX_TOKEN_LEN 127
#endif
#ifndef HYPERTCP_MAX_DEVICE_ID_LEN
#define HYPERTCP_MAX_DEVICE_ID_LEN 63
#endif
#ifndef HYPERTCP_MAX_HOST_LEN
#define HYPERTCP_MAX_HOST_LEN 63
#endif

// Most bytes one run() call reads before returning, so a flood of incoming
// frames cannot starve the rest of loop().
#ifndef HYPERTCP_READ_BUDGET
#define HYPERTCP_READ_BUDGET 2048
#endif

// Defaults for setHeartbeat() and setReconnectDelay().
#ifndef HYPERTCP_HEARTBEAT_MS
#define HYPERTCP_HEARTBEAT_MS 30000UL
#endif
#ifndef HYPERTCP_RECONNECT_MIN_MS
#define HYPERTCP_RECONNECT_MIN_MS 1000UL
#endif
#ifndef HYPERTCP_RECONNECT_MAX_MS
#define HYPERTCP_RECONNECT_MAX_MS 60000UL
#endif

// ArduinoJson 6 only: capacity of the StaticJsonDocument (on the stack) used
// to hand a received payload to onMessageReceived()/onBroadcastMessage().
#ifndef HYPERTCP_JSON_DOC_SIZE
#define HYPERTCP_JSON_DOC_SIZE 1024
#endif

// Marks the calls kept only so that sketches written for the original
// header compile; the compiler names the better call.
#define HYPERTCP_DEPRECATED(why) __attribute__((deprecated(why)))

static_assert(HYPERTCP_RX_BUFFER_SIZE >= 16 && HYPERTCP_RX_BUFFER_SIZE <= 65535,
              "HYPERTCP_RX_BUFFER_SIZE must be 16..65535");
// The LOGIN is the token and device id in a JSON object of 48 more bytes.
static_assert(HYPERTCP_TX_BUFFER_SIZE >= 5 + 48 + HYPERTCP_MAX_TOKEN_LEN + HYPERTCP_MAX_DEVICE_ID_LEN &&
                  HYPERTCP_TX_BUFFER_SIZE <= 5 + 65535,
              "HYPERTCP_TX_BUFFER_SIZE must hold a LOGIN frame and at most a 65535-byte payload");
static_assert(HYPERTCP_READ_BUDGET >= 1, "HYPERTCP_READ_BUDGET must be positive");

#endif  // HYPERTCP_CONFIG_H
