// sizes: the memory a HyperTCP protocol object takes, as built on this host
// with the default configuration.  The object holds every buffer the library
// uses; it allocates nothing else.

#include <Arduino.h>
#include <HyperTCPProtocol.h>

#include "PosixClient.h"

typedef HyperTCPTransport<PosixClient> Transport;
typedef HyperTCPProtocol<Transport> Protocol;

void setup() {
  printf("protocol %zu\n", sizeof(Protocol));
  printf("transport %zu\n", sizeof(Transport));
  printf("rx_buffer %zu\n", Protocol::rxBufferSize() + 1);
  printf("tx_buffer %zu\n", Protocol::txBufferSize());
  printf("token %d\n", HYPERTCP_MAX_TOKEN_LEN + 1);
  printf("device_id %d\n", HYPERTCP_MAX_DEVICE_ID_LEN + 1);
  printf("hosts %d\n", 2 * (HYPERTCP_MAX_HOST_LEN + 1));
  printf("pointer %zu\n", sizeof(void*));
  exit(0);
}

void loop() {}
