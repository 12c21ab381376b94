"""SCRAM-SHA-256 verifiers in PostgreSQL's format."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import scramp

from dpsql.policy import policy_from_dict
from dpsql.proxy.passwords import check_password, parse_verifier, scram_verifier


def test_format_and_fields() -> None:
    v = scram_verifier("alice-demo")
    assert v.startswith("SCRAM-SHA-256$4096:")
    p = parse_verifier(v)
    assert p.iterations == 4096 and len(p.salt) == 16
    assert str(p) == v
    assert scram_verifier("alice-demo") != v  # fresh salt each time


def test_matches_rfc5802_by_hand() -> None:
    salt = bytes(range(16))
    p = parse_verifier(scram_verifier("pencil", 8192, salt=salt))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 8192)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert p.stored_key == hashlib.sha256(client_key).digest()
    assert p.server_key == hmac.new(salted, b"Server Key", "sha256").digest()
    assert p.salt == salt and p.iterations == 8192


def test_full_scram_exchange_with_the_verifier() -> None:
    v = parse_verifier(scram_verifier("bob-demo"))
    mech = scramp.ScramMechanism("SCRAM-SHA-256")
    server = mech.make_server(lambda _user: (v.salt, v.stored_key, v.server_key, v.iterations))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "bob", "bob-demo")
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    server.set_client_final(client.get_client_final())
    client.set_server_final(server.get_server_final())  # raises if the server's proof is wrong


def test_check_password() -> None:
    v = scram_verifier("alice-demo")
    assert check_password("alice-demo", v)
    assert not check_password("alice-demo ", v)
    assert not check_password("", v)


def test_reproducible_with_salt() -> None:
    salt = b"0123456789abcdef"
    assert scram_verifier("x", salt=salt) == scram_verifier("x", salt=salt)


def test_rejects_weak_or_bad_input() -> None:
    with pytest.raises(ValueError):
        scram_verifier("x", iterations=1000)
    with pytest.raises(ValueError):
        scram_verifier("bad\x07password")  # SASLprep prohibits control characters
    for bad in ("md5abc", "SCRAM-SHA-256$4096:!!$a:b", "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA"):
        with pytest.raises(ValueError):
            parse_verifier(bad)


def test_policy_accepts_the_verifier() -> None:
    data = {
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "users": {"alice": {"password": scram_verifier("alice-demo")}},
        "tables": {"t": {"privacy_unit": "u"}},
    }
    policy = policy_from_dict(data)
    alice = policy.user("alice")
    assert alice is not None and alice.password is not None and check_password("alice-demo", alice.password)


def test_salt_is_base64() -> None:
    p = scram_verifier("x").split("$")[1].split(":")[1]
    assert len(base64.b64decode(p)) == 16
