"""Password hashing and login tokens with the standard library only (no passlib, no jwt)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

__all__ = [
    "PBKDF2_ITERATIONS",
    "hash_password",
    "make_token",
    "read_token",
    "verify_password",
]

# OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.14 s per hash on a 2-core CI box).
# Read at call time, so a test suite may lower it with monkeypatch; stored hashes carry their
# own count, so verifying keeps working either way.
PBKDF2_ITERATIONS = 600_000
_ALGORITHM = "pbkdf2_sha256"


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int | None = None
) -> str:
    """Return ``pbkdf2_sha256$<iterations>$<salt hex>$<digest hex>``.

    A fixed ``salt`` and a low ``iterations`` are for seeds and factories, whose rows must be
    the same on every run and fast to make; the app always uses a random salt.
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    rounds = PBKDF2_ITERATIONS if iterations is None else iterations
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"{_ALGORITHM}${rounds}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Check ``password`` against a hash made by :func:`hash_password`."""
    try:
        algorithm, rounds, salt_hex, digest_hex = stored.split("$")
        salt, rounds_n = bytes.fromhex(salt_hex), int(rounds)
    except ValueError:
        return False
    if algorithm != _ALGORITHM:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds_n)
    return hmac.compare_digest(digest.hex(), digest_hex)


def _secret() -> bytes:
    # A development default keeps the example runnable; a deployment sets APP_SECRET_KEY.
    return os.environ.get("APP_SECRET_KEY", "dev-only-secret").encode()


def _sign(payload: str) -> str:
    return hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()


def make_token(user_id: int) -> str:
    """Return a signed bearer token ``<user id>.<nonce>.<signature>`` for ``user_id``."""
    payload = f"{user_id}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_sign(payload)}"


def read_token(token: str) -> int | None:
    """Return the user id of a token made by :func:`make_token`, or None if it is forged."""
    payload, _, signature = token.rpartition(".")
    if not payload or not hmac.compare_digest(_sign(payload), signature):
        return None
    user_id, _, _nonce = payload.partition(".")
    return int(user_id) if user_id.isdigit() else None
