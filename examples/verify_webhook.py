#!/usr/bin/env python3
"""Verify a Coffer webhook: python3 verify_webhook.py <secret> <Coffer-Signature header> < body

Exits 0 and prints "valid" when the signature matches and is at most five minutes old,
otherwise prints why and exits 1. Use the same few lines in your webhook handler, on the raw
request body (before any JSON parsing).
"""
import hashlib
import hmac
import sys
import time

TOLERANCE_SECONDS = 300


def verify(secret: str, header: str, body: bytes, now: float) -> str | None:
    """Returns None when valid, else the reason."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return "no timestamp"
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    candidates = [value for key, value in (item.split("=", 1) for item in header.split(",") if "=" in item) if key == "v1"]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return "signature mismatch"
    return None


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    problem = verify(sys.argv[1], sys.argv[2], sys.stdin.buffer.read(), time.time())
    print(problem or "valid")
    sys.exit(1 if problem else 0)
