// HyperTCPWire.h - the HyperTCP wire constants (docs/protocol.rst, PROTOCOL.md
// v1), named as in the original sketch.  tests/test_firmware.py pins them to
// the Python ones.

#ifndef HYPERTCP_WIRE_H
#define HYPERTCP_WIRE_H

#include <stddef.h>
#include <stdint.h>

// Commands: the frame's type byte.
enum HyperTCPCmd : uint8_t {
  HYPER_TCP_CMD_RESPONSE = 0,
  HYPER_TCP_CMD_PING = 6,
  HYPER_TCP_CMD_LOGIN = 29,
  HYPER_TCP_CMD_JSON_MESSAGE = 30,
  HYPER_TCP_CMD_REDIRECT = 41,
  HYPER_TCP_CMD_BROADCAST = 50,
};

// Statuses: the one payload byte of a RESPONSE (an empty one means SUCCESS).
enum HyperTCPStatus : uint8_t {
  HYPER_TCP_STATUS_SUCCESS = 200,
  HYPER_TCP_STATUS_STORED = 202,  // a qos 1 message kept for an offline target
  HYPER_TCP_STATUS_QUOTA_LIMIT = 1,
  HYPER_TCP_STATUS_ILLEGAL_COMMAND = 2,
  HYPER_TCP_STATUS_NOT_AUTHENTICATED = 5,
  HYPER_TCP_STATUS_NOT_ALLOWED = 6,
  HYPER_TCP_STATUS_DEVICE_NOT_IN_NETWORK = 7,
  HYPER_TCP_STATUS_INVALID_TOKEN = 9,
  HYPER_TCP_STATUS_ILLEGAL_COMMAND_BODY = 11,
  HYPER_TCP_STATUS_TIMEOUT = 16,
  HYPER_TCP_STATUS_SERVER_EXCEPTION = 19,
};

// What a message asks of the server's delivery: QOS_1 asks it to keep the
// message for a target that is offline (answered STORED) until it is
// delivered and acknowledged.  Messages without "qos" are QOS_0.
enum HyperTCPQos : uint8_t {
  HYPER_TCP_QOS_0 = 0,
  HYPER_TCP_QOS_1 = 1,
};

// The protocol level this library announces in its LOGIN ("proto"): a
// client at level 2 reads the status byte of every RESPONSE.
#define HYPER_TCP_PROTO_TEXT "2"

// type (1 byte), msg_id (2), length (2), big-endian.
static const size_t HYPER_TCP_HEADER_SIZE = 5;

#endif  // HYPERTCP_WIRE_H
