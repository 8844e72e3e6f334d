// PosixClient: an Arduino Client over a POSIX TCP socket, for the host.
//
// It behaves like the ESP32 WiFiClient where the library can tell:
//   * connect() blocks until connected or its timeout (3 s by default);
//   * the socket is non-blocking: available() and read() never wait, and
//     read() returns -1 when nothing is buffered;
//   * write() keeps going until every byte is queued, waiting for room at
//     most the write timeout, and returns how many bytes it queued;
//   * connected() stays true while unread data remains after the peer closed.

#ifndef HYPERTCP_HOST_POSIX_CLIENT_H
#define HYPERTCP_HOST_POSIX_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "Arduino.h"
#include "Client.h"

class PosixClient : public Client {
 public:
  PosixClient() : _fd(-1), _connectTimeoutMs(3000), _writeTimeoutMs(5000), _readObserver(nullptr) {}
  ~PosixClient() override { stop(); }

  PosixClient(const PosixClient&) = delete;
  PosixClient& operator=(const PosixClient&) = delete;

  int connect(const char* host, uint16_t port) override {
    stop();
    char service[8];
    snprintf(service, sizeof service, "%u", static_cast<unsigned>(port));
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* found = nullptr;
    if (getaddrinfo(host, service, &hints, &found) != 0) return 0;
    for (struct addrinfo* ai = found; ai != nullptr && _fd < 0; ai = ai->ai_next) {
      int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
          (errno == EINPROGRESS && waitConnected(fd))) {
        _fd = fd;
      } else {
        ::close(fd);
      }
    }
    freeaddrinfo(found);
    return _fd >= 0 ? 1 : 0;
  }

  size_t write(uint8_t byte) override { return write(&byte, 1); }

  size_t write(const uint8_t* buf, size_t size) override {
    size_t done = 0;
    uint32_t start = millis();
    while (_fd >= 0 && done < size) {
      ssize_t n = ::send(_fd, buf + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        uint32_t waited = millis() - start;
        if (waited >= _writeTimeoutMs) break;
        struct pollfd p = {_fd, POLLOUT, 0};
        poll(&p, 1, static_cast<int>(_writeTimeoutMs - waited));
        continue;
      }
      break;  // the connection is broken
    }
    return done;
  }

  int available() override {
    if (_fd < 0) return 0;
    int n = 0;
    if (ioctl(_fd, FIONREAD, &n) < 0) return 0;
    return n;
  }

  int read() override {
    uint8_t byte;
    return read(&byte, 1) == 1 ? byte : -1;
  }

  int read(uint8_t* buf, size_t size) override {
    if (_fd < 0 || size == 0) return -1;
    ssize_t n = ::recv(_fd, buf, size, MSG_DONTWAIT);
    if (n <= 0) return -1;
    if (_readObserver != nullptr) _readObserver(static_cast<size_t>(n));
    return static_cast<int>(n);
  }

  int peek() override {
    uint8_t byte;
    if (_fd < 0 || ::recv(_fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK) != 1) return -1;
    return byte;
  }

  void flush() override {}

  void stop() override {
    if (_fd >= 0) {
      ::close(_fd);
      _fd = -1;
    }
  }

  uint8_t connected() override {
    if (_fd < 0) return 0;
    uint8_t byte;
    ssize_t n = ::recv(_fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
    if (n > 0) return 1;                                      // data waiting
    if (n == 0) return 0;                                     // peer closed, all read
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 1 : 0;
  }

  operator bool() override { return connected() != 0; }

  void setConnectTimeout(uint32_t ms) { _connectTimeoutMs = ms; }
  void setWriteTimeout(uint32_t ms) { _writeTimeoutMs = ms; }
  void setNoDelay(bool on) {
    int flag = on ? 1 : 0;
    if (_fd >= 0) setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &flag, sizeof flag);
  }

  // Host tests only: called with the size of every successful read, so a
  // test can see how the library consumed the stream.
  void setReadObserver(void (*observer)(size_t bytes)) { _readObserver = observer; }

 private:
  bool waitConnected(int fd) {
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(_connectTimeoutMs)) != 1) return false;
    int error = 0;
    socklen_t len = sizeof error;
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
  }

  int _fd;
  uint32_t _connectTimeoutMs;
  uint32_t _writeTimeoutMs;
  void (*_readObserver)(size_t bytes);
};

#endif  // HYPERTCP_HOST_POSIX_CLIENT_H
