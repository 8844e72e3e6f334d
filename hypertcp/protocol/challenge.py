"""
Challenge-response login: the token never crosses the wire.

Many ESP32 fleets run plain TCP because TLS costs tens of KB of RAM; a raw
token sent there can be read and replayed.  This is SCRAM's construction
(RFC 5802) cut to one round: the server sends a fresh nonce, the client
proves it holds the token with an HMAC bound to that nonce and to the
device id it logs in as, and the server checks the proof against what it
stores.

    ClientKey       = HMAC-SHA256(token, "HyperTCP client key")
    StoredKey       = SHA-256(ClientKey)            -- what the server keeps
    AuthMessage     = nonce_hex ":" device_id       -- device_id may be empty
    ClientSignature = HMAC-SHA256(StoredKey, AuthMessage)
    proof           = ClientKey XOR ClientSignature -- 64 hex characters
    key             = SHA-256(token)[:8], in hex    -- which token, not secret

The server recovers ClientKey as proof XOR ClientSignature and accepts it
when SHA-256 of it is StoredKey.  A token file that leaks gives StoredKey,
which is not enough to log in (that needs ClientKey, a preimage); but
StoredKey together with one recorded exchange gives ClientKey, so a leaked
file still means rotating the tokens.  A nonce is used once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional

CLIENT_KEY_LABEL = b"HyperTCP client key"
NONCE_BYTES = 32
KEY_ID_HEX = 16


def key_id(token: str) -> str:
    """The token's public name in a challenge login: the first 8 bytes of its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:KEY_ID_HEX]


def client_key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8"), CLIENT_KEY_LABEL, hashlib.sha256).digest()


def stored_key(token: str) -> str:
    """What the server stores to check proofs, in hex."""
    return hashlib.sha256(client_key(token)).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def _auth_message(nonce: str, device_id: Optional[str]) -> bytes:
    return f"{nonce}:{device_id or ''}".encode("utf-8")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def proof(token: str, nonce: str, device_id: Optional[str] = None) -> str:
    """The client's answer to C{nonce}, logging in as C{device_id}."""
    ck = client_key(token)
    signature = hmac.new(hashlib.sha256(ck).digest(), _auth_message(nonce, device_id),
                         hashlib.sha256).digest()
    return _xor(ck, signature).hex()


def verify(stored: str, nonce: str, device_id: Optional[str], answer: str) -> bool:
    """Does C{answer} prove the token whose stored key is C{stored} (hex)?"""
    try:
        given = bytes.fromhex(answer)
        key = bytes.fromhex(stored)
    except ValueError:
        return False
    if len(given) != 32 or len(key) != 32:
        return False
    signature = hmac.new(key, _auth_message(nonce, device_id), hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(_xor(given, signature)).digest(), key)
