"""Rules for the set of presigned transactions a ramp receives (structure, not cryptography).

Signatures and payload equality are checked by the chain adapters; these rules make sure every
presigned transaction answers exactly one issued transaction and that start has them all.
"""

from __future__ import annotations

from ramp_service.domain.errors import InvalidRampRequest
from ramp_service.domain.ramp import IssuedTx, PresignedTx
from service_kit.errors import FieldViolation, InvalidInput

TxKey = tuple[str, str]  # (phase, network)


def match_presigned(
    issued: list[IssuedTx], incoming: list[PresignedTx]
) -> list[tuple[IssuedTx, PresignedTx]]:
    """Pair each incoming transaction with the issued one it answers; raise naming bad ones."""
    by_key = {(tx.phase, tx.network.value): tx for tx in issued}
    pairs: list[tuple[IssuedTx, PresignedTx]] = []
    seen: set[TxKey] = set()
    violations: list[FieldViolation] = []
    for i, tx in enumerate(incoming):
        where = f"presigned_txs[{i}]"
        key = (tx.phase, tx.network)
        target = by_key.get(key)
        if target is None:
            violations.append(
                FieldViolation(
                    where, f"no {tx.network} transaction was issued for phase {tx.phase!r}"
                )
            )
        elif key in seen:
            violations.append(
                FieldViolation(where, f"phase {tx.phase!r} on {tx.network} given twice")
            )
        elif tx.signer != target.signer:
            violations.append(FieldViolation(f"{where}.signer", f"must be {target.signer}"))
        elif tx.nonce != target.nonce:
            violations.append(FieldViolation(f"{where}.nonce", f"must be {target.nonce}"))
        elif bool(tx.tx_data) == bool(tx.signature):
            violations.append(FieldViolation(where, "give exactly one of tx_data or signature"))
        elif tx.signature and tx.network != "pendulum":
            violations.append(
                FieldViolation(
                    f"{where}.signature", "only Pendulum transactions may be given as a signature"
                )
            )
        else:
            pairs.append((target, tx))
        seen.add(key)
    if violations:
        raise InvalidRampRequest(violations)
    return pairs


def check_complete(issued: list[IssuedTx], have: set[TxKey]) -> None:
    """Raise PRESIGNED_TX_MISSING unless every issued transaction has a presigned answer."""
    missing = [
        f"{tx.phase}/{tx.network.value}"
        for tx in issued
        if (tx.phase, tx.network.value) not in have
    ]
    if missing:
        raise InvalidInput(
            "PRESIGNED_TX_MISSING",
            "missing presigned transactions: " + ", ".join(missing),
            [FieldViolation("presigned_txs", f"missing {m}") for m in missing],
        )
