// fuzz_json: a libFuzzer target for HyperTCPJson, the library's JSON
// scanner (make fuzz).  The input is the text; the key looked up is "from",
// "payload" and whatever follows the first NUL byte of the input, if any.
//
// Besides the sanitizers (the input buffer is exactly its size, so reading
// one byte past it is caught), it checks: a found value lies inside the
// text; a decoded string fits its buffer, is NUL-terminated and decodes the
// same in place; equals() agrees with the decoded text for ASCII strings.

#include <HyperTCPJson.h>
#include <stdio.h>
#include <stdlib.h>

#include <string>

namespace {

#define FUZZ_ASSERT(condition)                                                 \
  do {                                                                         \
    if (!(condition)) {                                                        \
      fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #condition); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

void lookUp(const char* text, size_t len, const char* key) {
  HyperTCPJsonSpan v;
  if (!HyperTCPJson::find(text, len, key, v)) return;
  FUZZ_ASSERT(v.ptr >= text && v.len > 0 && v.ptr + v.len <= text + len);
  uint32_t number;
  if (HyperTCPJson::getUint(v, number)) FUZZ_ASSERT(v.len <= 10);
  char small[8];
  char out[256];
  const bool fits = HyperTCPJson::getString(v, out, sizeof out);
  if (HyperTCPJson::getString(v, small, sizeof small)) {
    FUZZ_ASSERT(fits && strlen(small) < sizeof small && strcmp(small, out) == 0);
  }
  if (!fits) return;
  FUZZ_ASSERT(HyperTCPJson::isString(v) && strlen(out) < sizeof out);
  bool ascii = true;
  for (const char* c = out; *c != '\0'; c++) ascii = ascii && static_cast<unsigned char>(*c) < 0x80;
  if (ascii) FUZZ_ASSERT(HyperTCPJson::equals(v, out));
  // In place, as the library decodes a sender id in its receive buffer.
  std::string copy(v.ptr, v.len);
  HyperTCPJsonSpan here = {copy.data(), copy.size()};
  FUZZ_ASSERT(HyperTCPJson::getString(here, &copy[0], copy.size()) && strcmp(copy.c_str(), out) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  const void* nul = memchr(data, 0, size);
  const size_t len = nul != nullptr ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - data) : size;
  lookUp(text, len, "from");
  lookUp(text, len, "payload");
  if (nul != nullptr) {
    const std::string key(text + len + 1, size - len - 1);  // up to its own first NUL
    lookUp(text, len, key.c_str());
  }
  return 0;
}
