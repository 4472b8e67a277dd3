"""Stellar transaction envelopes read by byte layout, for register's and start's hot paths.

stellar-sdk parses a whole envelope into Python objects (every account id through base32 and a
checksum) to answer what a few bytes at known offsets say: py-spy found its parsing and
re-serializing at a quarter of the ramp service's CPU under register+start load. These
functions read the XDR directly (RFC 4506 as Stellar uses it: big-endian 4-byte words) for the
one shape we issue, a V1 envelope (`ENVELOPE_TYPE_TX`) from an ed25519 or muxed source, and
answer None for anything else, which the caller then hands to stellar-sdk. None is never a
verdict: a caller that gets it decides with the SDK, so anything this module does not
recognise is judged exactly as before (tests/unit/test_stellar_bytes.py checks both agree).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from functools import lru_cache

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk.strkey import StrKey

ENVELOPE_TYPE_TX = struct.pack(">I", 2)
KEY_TYPE_ED25519 = 0
KEY_TYPE_MUXED_ED25519 = 0x100
NO_SIGNATURES = struct.pack(">I", 0)
MAX_SIGNATURES = 20  # DecoratedSignature signatures<20>
SIGNATURE_LEN = 64  # an ed25519 signature; XDR's Signature is opaque<64>


def decode(envelope_xdr: str) -> bytes | None:
    """The envelope's bytes, or None if it is not strict base64."""
    try:
        return base64.b64decode(envelope_xdr, validate=True)
    except (binascii.Error, ValueError):
        return None


def sequence(envelope: bytes) -> int | None:
    """The sequence number of a V1 envelope's transaction: after the envelope type, the source
    account (a key type word, then 32 bytes, or 8 + 32 for a muxed one) and the fee word."""
    if len(envelope) < 8 or envelope[:4] != ENVELOPE_TYPE_TX:
        return None
    (key_type,) = struct.unpack_from(">I", envelope, 4)
    if key_type == KEY_TYPE_ED25519:
        offset = 8 + 32 + 4
    elif key_type == KEY_TYPE_MUXED_ED25519:
        offset = 8 + 8 + 32 + 4
    else:
        return None
    if len(envelope) < offset + 8:
        return None
    return struct.unpack_from(">q", envelope, offset)[0]


def unsigned_body(envelope: bytes) -> bytes | None:
    """A V1 envelope without signatures, as issued: its type and transaction (the envelope
    minus its empty signature list), which is also what a signature's payload ends with."""
    if len(envelope) < 8 or envelope[:4] != ENVELOPE_TYPE_TX or envelope[-4:] != NO_SIGNATURES:
        return None
    return envelope[:-4]


def signatures(envelope: bytes, body_len: int) -> list[tuple[bytes, bytes]] | None:
    """The (hint, signature) pairs after the first `body_len` bytes, if they are exactly a
    well-formed list of at most 20 entries of 64-byte signatures running to the end."""
    if len(envelope) < body_len + 4:
        return None
    (count,) = struct.unpack_from(">I", envelope, body_len)
    entry = 4 + 4 + SIGNATURE_LEN
    if count > MAX_SIGNATURES or len(envelope) != body_len + 4 + count * entry:
        return None
    pairs = []
    for i in range(count):
        at = body_len + 4 + i * entry
        (length,) = struct.unpack_from(">I", envelope, at + 4)
        if length != SIGNATURE_LEN:
            return None
        pairs.append((envelope[at : at + 4], envelope[at + 8 : at + entry]))
    return pairs


@lru_cache(maxsize=4096)
def _public_key(address: str) -> bytes:
    return StrKey.decode_ed25519_public_key(address)


def verified(network_id: bytes, issued_xdr: str, signed_xdr: str, signer: str) -> str | None:
    """The issued envelope with `signer`'s signature from `signed_xdr` when the signed envelope
    is the issued transaction byte for byte plus well-formed signatures, one of them `signer`'s
    and valid on this network (the first such, as stellar-sdk's check takes); else None."""
    issued, signed = decode(issued_xdr), decode(signed_xdr)
    if issued is None or signed is None:
        return None
    body = unsigned_body(issued)
    if body is None or not signed.startswith(body):
        return None
    pairs = signatures(signed, len(body))
    if not pairs:
        return None
    try:
        key = _public_key(signer)
    except Exception:  # not an account id: stellar-sdk says how
        return None
    hint, verifier = key[-4:], VerifyKey(key)
    # The signature payload: network id, then the tagged transaction, which is the body.
    tx_hash = hashlib.sha256(network_id + body).digest()
    for signature_hint, signature in pairs:
        if signature_hint != hint:
            continue
        try:
            verifier.verify(tx_hash, signature)
        except BadSignatureError:
            continue
        one = struct.pack(">I", 1) + hint + struct.pack(">I", SIGNATURE_LEN) + signature
        return base64.b64encode(body + one).decode("ascii")
    return None
