// HyperTCPSha256.h - SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), small
// and self-contained, for the challenge login.  Nothing here is compiled
// into a sketch that does not call useChallengeLogin().

#ifndef HYPERTCP_SHA256_H
#define HYPERTCP_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

class HyperTCPSha256 {
 public:
  static const size_t kDigestSize = 32;
  static const size_t kBlockSize = 64;

  HyperTCPSha256() { reset(); }

  void reset() {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(_h, initial, sizeof _h);
    _bytes = 0;
  }

  void update(const void* data, size_t len) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (len > 0) {
      const size_t used = static_cast<size_t>(_bytes % kBlockSize);
      size_t take = kBlockSize - used;
      if (take > len) take = len;
      memcpy(_block + used, p, take);
      _bytes += take;
      p += take;
      len -= take;
      if (used + take == kBlockSize) compress();
    }
  }

  void finish(uint8_t digest[kDigestSize]) {
    const uint64_t bits = _bytes * 8;
    const uint8_t one = 0x80;
    const uint8_t zero = 0;
    update(&one, 1);
    while (_bytes % kBlockSize != kBlockSize - 8) update(&zero, 1);
    uint8_t length[8];
    for (int i = 0; i < 8; i++) length[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(length, 8);
    for (size_t i = 0; i < 8; i++) {
      digest[4 * i] = static_cast<uint8_t>(_h[i] >> 24);
      digest[4 * i + 1] = static_cast<uint8_t>(_h[i] >> 16);
      digest[4 * i + 2] = static_cast<uint8_t>(_h[i] >> 8);
      digest[4 * i + 3] = static_cast<uint8_t>(_h[i]);
    }
  }

  static void hash(const void* data, size_t len, uint8_t digest[kDigestSize]) {
    HyperTCPSha256 sha;
    sha.update(data, len);
    sha.finish(digest);
  }

 private:
  static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    // The message schedule, 16 words at a time (w[i] for i >= 16 replaces
    // w[i - 16]), so it takes 64 bytes of stack rather than 256.
    uint32_t w[16];
    for (size_t i = 0; i < 16; i++) {
      w[i] = (static_cast<uint32_t>(_block[4 * i]) << 24) | (static_cast<uint32_t>(_block[4 * i + 1]) << 16) |
             (static_cast<uint32_t>(_block[4 * i + 2]) << 8) | static_cast<uint32_t>(_block[4 * i + 3]);
    }
    uint32_t s[8];
    memcpy(s, _h, sizeof s);
    for (size_t i = 0; i < 64; i++) {
      if (i >= 16) {
        const uint32_t w15 = w[(i - 15) & 15];
        const uint32_t w2 = w[(i - 2) & 15];
        w[i & 15] += (rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3)) + w[(i - 7) & 15] +
                     (rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10));
      }
      const uint32_t t1 = s[7] + (rotr(s[4], 6) ^ rotr(s[4], 11) ^ rotr(s[4], 25)) +
                          ((s[4] & s[5]) ^ (~s[4] & s[6])) + k[i] + w[i & 15];
      const uint32_t t2 =
          (rotr(s[0], 2) ^ rotr(s[0], 13) ^ rotr(s[0], 22)) + ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
      memmove(s + 1, s, 7 * sizeof s[0]);
      s[4] += t1;
      s[0] = t1 + t2;
    }
    for (size_t i = 0; i < 8; i++) _h[i] += s[i];
  }

  uint32_t _h[8];
  uint64_t _bytes;  // message length so far
  uint8_t _block[kBlockSize];
};

// HMAC-SHA256: H((K ^ opad) || H((K ^ ipad) || message)), a key longer than
// a block replaced by its hash.
class HyperTCPHmacSha256 {
 public:
  HyperTCPHmacSha256(const void* key, size_t keyLen) {
    uint8_t block[HyperTCPSha256::kBlockSize];
    memset(block, 0, sizeof block);
    if (keyLen > sizeof block) {
      HyperTCPSha256::hash(key, keyLen, block);
    } else {
      memcpy(block, key, keyLen);
    }
    for (size_t i = 0; i < sizeof block; i++) block[i] ^= 0x36;
    _inner.update(block, sizeof block);
    for (size_t i = 0; i < sizeof block; i++) _outerKey[i] = static_cast<uint8_t>(block[i] ^ 0x36 ^ 0x5c);
  }

  void update(const void* data, size_t len) { _inner.update(data, len); }

  void finish(uint8_t mac[HyperTCPSha256::kDigestSize]) {
    uint8_t innerDigest[HyperTCPSha256::kDigestSize];
    _inner.finish(innerDigest);
    HyperTCPSha256 outer;
    outer.update(_outerKey, sizeof _outerKey);
    outer.update(innerDigest, sizeof innerDigest);
    outer.finish(mac);
  }

  static void mac(const void* key, size_t keyLen, const void* data, size_t len,
                  uint8_t out[HyperTCPSha256::kDigestSize]) {
    HyperTCPHmacSha256 hmac(key, keyLen);
    hmac.update(data, len);
    hmac.finish(out);
  }

 private:
  HyperTCPSha256 _inner;
  uint8_t _outerKey[HyperTCPSha256::kBlockSize];
};

#endif  // HYPERTCP_SHA256_H
