// crypto_test: the library's SHA-256 and HMAC-SHA256 against the published
// test vectors (FIPS 180-2 appendix B, RFC 4231 section 4) and at the
// padding boundaries, whole and fed in pieces.

#include <Arduino.h>
#include <HyperTCPSha256.h>

#include <string>

#include "UnitTest.h"

namespace {

std::string hex(const uint8_t* bytes, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; i++) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 0xF];
  }
  return out;
}

std::string sha256(const std::string& message) {
  uint8_t digest[HyperTCPSha256::kDigestSize];
  HyperTCPSha256::hash(message.data(), message.size(), digest);
  return hex(digest, sizeof digest);
}

// The same message fed `piece` bytes at a time.
std::string sha256InPieces(const std::string& message, size_t piece) {
  HyperTCPSha256 sha;
  for (size_t i = 0; i < message.size(); i += piece) {
    sha.update(message.data() + i, message.size() - i < piece ? message.size() - i : piece);
  }
  uint8_t digest[HyperTCPSha256::kDigestSize];
  sha.finish(digest);
  return hex(digest, sizeof digest);
}

std::string hmac(const std::string& key, const std::string& message) {
  uint8_t mac[HyperTCPSha256::kDigestSize];
  HyperTCPHmacSha256::mac(key.data(), key.size(), message.data(), message.size(), mac);
  return hex(mac, sizeof mac);
}

std::string bytes(size_t n, int value) { return std::string(n, static_cast<char>(value)); }

}  // namespace

TEST(sha256_fips_180_2_vectors) {
  CHECK_EQ(sha256("abc"), std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_EQ(sha256(""), std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  CHECK_EQ(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
           std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
  CHECK_EQ(sha256("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                  "mnopqrstnopqrstu"),
           std::string("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
  const std::string million(1000000, 'a');
  CHECK_EQ(sha256InPieces(million, 1000),
           std::string("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

TEST(sha256_at_the_padding_boundaries_whole_and_in_pieces) {
  // Python's hashlib, for 55..120 bytes of 'x': one block or two for the
  // padding and length.
  struct {
    size_t n;
    const char* digest;
  } const cases[] = {
      {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
      {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
      {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
      {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
      {65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9"},
      {119, "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c"},
      {120, "13f05a0b594787f5ecd315edc96141bd3243203d1b7d4f0836f37308b276ba98"},
  };
  for (const auto& c : cases) {
    const std::string message(c.n, 'x');
    CHECK_EQ(sha256(message), std::string(c.digest));
    for (size_t piece : {1u, 7u, 63u, 64u}) CHECK_EQ(sha256InPieces(message, piece), std::string(c.digest));
  }
}

TEST(hmac_sha256_rfc_4231_vectors) {
  CHECK_EQ(hmac(bytes(20, 0x0b), "Hi There"),
           std::string("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
  CHECK_EQ(hmac("Jefe", "what do ya want for nothing?"),
           std::string("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  CHECK_EQ(hmac(bytes(20, 0xaa), bytes(50, 0xdd)),
           std::string("773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"));
  std::string key4;
  for (int b = 1; b <= 25; b++) key4 += static_cast<char>(b);
  CHECK_EQ(hmac(key4, bytes(50, 0xcd)),
           std::string("82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"));
  // Test case 5 gives only the first 128 bits.
  CHECK_EQ(hmac(bytes(20, 0x0c), "Test With Truncation").substr(0, 32),
           std::string("a3b6167473100ee06e0c796c2955552b"));
  // A key longer than a block is hashed first.
  CHECK_EQ(hmac(bytes(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First"),
           std::string("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
  CHECK_EQ(hmac(bytes(131, 0xaa),
                "This is a test using a larger than block-size key and a larger than block-size data. The key "
                "needs to be hashed before being used by the HMAC algorithm."),
           std::string("9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"));
}

int main(int argc, char** argv) { return runUnitTests(argc, argv); }
