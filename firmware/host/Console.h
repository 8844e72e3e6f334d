// Console: the line commands a host test program takes on stdin, one per
// line, so a test can drive it while it runs its loop().

#ifndef HYPERTCP_HOST_CONSOLE_H
#define HYPERTCP_HOST_CONSOLE_H

#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "Arduino.h"

namespace console {

// Splits "WORD rest" at the first space; returns rest, or nullptr.
inline char* split(char* text) {
  char* space = strchr(text, ' ');
  if (space == nullptr) return nullptr;
  *space = '\0';
  return space + 1;
}

// Waits up to 1 ms for input (also the loop's pacing), then calls `run`
// with every complete line; calls `end` at the end of input.
inline void poll(void (*run)(char* line), void (*end)()) {
  static char line[8192];
  static size_t lineLen = 0;
  struct pollfd p = {STDIN_FILENO, POLLIN, 0};
  if (::poll(&p, 1, 1) != 1) return;
  ssize_t n = ::read(STDIN_FILENO, line + lineLen, sizeof line - 1 - lineLen);
  if (n <= 0) {
    end();
    return;
  }
  lineLen += static_cast<size_t>(n);
  line[lineLen] = '\0';
  char* start = line;
  char* newline;
  while ((newline = strchr(start, '\n')) != nullptr) {
    *newline = '\0';
    run(start);
    start = newline + 1;
  }
  lineLen = strlen(start);
  memmove(line, start, lineLen + 1);
  if (lineLen == sizeof line - 1) {
    Serial.println("line-too-long");
    lineLen = 0;
  }
}

}  // namespace console

#endif  // HYPERTCP_HOST_CONSOLE_H
