// size_probe: a sketch that uses every public call of the library, built for
// microcontrollers (make cross) to measure what the library costs in flash
// and RAM.  Built with -DPROBE_BASELINE it is the same program without the
// library; the difference between the two is the library's cost.  With
// -DPROBE_CHALLENGE it also turns on the challenge login.

#include "size_probe.h"

#ifndef PROBE_BASELINE
#include <HyperTCPProtocol.h>

NetClient net;
HyperTCPTransport<NetClient> transport(net);
HyperTCPProtocol<HyperTCPTransport<NetClient>> device(transport);

int main() {
#ifdef PROBE_CHALLENGE
  device.useChallengeLogin();
#endif
  device.setDeviceId(probeInput());
  device.setHeartbeat(30000, 45000);
  device.setReconnectDelay(1000, 60000);
  device.connect(probeInput(), probeInput(), 8080);
  while (probeRunning()) {
    device.run();
    if (device.connected()) {
      device.sendMessage(probeInput(), probeInput());
      device.sendMessage(probeInput(), probeInput(), HYPER_TCP_QOS_1);
      device.broadcastMessage(probeInput());
      device.sendToServer(probeInput());
    }
  }
  device.disconnect();
  return 0;
}

#else

NetClient net;

int main() {
  while (probeRunning()) net.available();
  return 0;
}

#endif
