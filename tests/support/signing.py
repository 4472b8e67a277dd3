"""Presign issued transactions exactly as a browser does (tests and benchmarks share it)."""

from __future__ import annotations

from stellar_sdk import TransactionEnvelope

from pendulumpay.ramp.v1 import ramp_pb2


def sign_all(
    ramp: ramp_pb2.Ramp, keys: dict[str, object], passphrase: str
) -> list[ramp_pb2.PresignedTx]:
    """What the browser does with each unsigned transaction."""
    signed = []
    for tx in ramp.unsigned_txs:
        presigned = ramp_pb2.PresignedTx(
            phase=tx.phase, network=tx.network, signer=tx.signer, nonce=tx.nonce
        )
        if tx.network == "stellar":
            envelope = TransactionEnvelope.from_xdr(tx.tx_data, passphrase)
            envelope.sign(keys["stellar"])  # type: ignore[arg-type]
            presigned.tx_data = envelope.to_xdr()
        else:
            signature = keys["pendulum"].sign(bytes.fromhex(tx.tx_data[2:]))  # type: ignore[attr-defined]
            presigned.signature = "0x" + signature.hex()
        signed.append(presigned)
    return signed
