"""
The challenge-response construction (hypertcp.protocol.challenge) and the token
file's keys.  The challenge login itself: tests/unit/test_challenge.py.
"""

from __future__ import annotations

import hashlib

from hypertcp.protocol.challenge import KEY_ID_HEX, key_id, new_nonce, proof, stored_key, verify
from hypertcp.server.tokens import TokenStore

TOKEN = "correct-horse-battery-staple"


def test_the_key_id_is_the_tokens_sha256_prefix():
    assert key_id(TOKEN) == hashlib.sha256(TOKEN.encode()).hexdigest()[:KEY_ID_HEX]
    assert len(key_id(TOKEN)) == 16


def test_a_proof_verifies_for_its_token_nonce_and_id_only():
    nonce = new_nonce()
    answer = proof(TOKEN, nonce, "dev-1")
    assert len(answer) == 64
    assert verify(stored_key(TOKEN), nonce, "dev-1", answer)
    assert not verify(stored_key("another-token"), nonce, "dev-1", answer)
    assert not verify(stored_key(TOKEN), new_nonce(), "dev-1", answer), "a nonce is used once"
    assert not verify(stored_key(TOKEN), nonce, None, answer)
    assert verify(stored_key(TOKEN), nonce, None, proof(TOKEN, nonce))


def test_malformed_proofs_are_refused_not_raised():
    nonce = new_nonce()
    for bad in ("", "zz" * 32, "ab" * 31, "ab" * 33):
        assert not verify(stored_key(TOKEN), nonce, None, bad)
    assert not verify("not hex", nonce, None, proof(TOKEN, nonce))


def test_nonces_are_fresh():
    assert len({new_nonce() for _ in range(100)}) == 100
    assert len(new_nonce()) == 64


def test_the_token_file_keeps_the_stored_key_and_finds_the_token_by_key_id(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    secret = store.add("dev-1")
    record = store.lookup(secret)
    assert record is not None
    assert record.stored_key == stored_key(secret)
    assert record.key_id == key_id(secret)
    assert store.by_key(key_id(secret)) is record
    assert secret not in (tmp_path / "tokens.json").read_text()
    store.revoke("dev-1")
    assert store.by_key(key_id(secret)) is None
