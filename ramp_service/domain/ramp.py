"""The ramp aggregate as the register/start use cases see it, and its rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from ramp_service.domain.errors import InvalidRampRequest, invalid
from ramp_service.domain.flows import REQUIRED_ACCOUNTS, Network
from service_kit.errors import FieldViolation

# Ramp ids derive from the quote id: a retried register (after a crash between consuming the
# quote and storing the ramp) consumes the quote again under the same ramp id and succeeds.
RAMP_ID_NAMESPACE = uuid.UUID("5d1b7c1e-3c1a-4f55-9a43-6f2f0b1c9e10")


class RampStatus(StrEnum):
    """Where a ramp stands."""

    REGISTERED = "REGISTERED"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    MANUAL_REVIEW = "MANUAL_REVIEW"
    CANCELLED = "CANCELLED"


def ramp_id_for_quote(quote_id: uuid.UUID) -> uuid.UUID:
    """The one ramp id a quote can ever be consumed under."""
    return uuid.uuid5(RAMP_ID_NAMESPACE, str(quote_id))


@dataclass(frozen=True)
class QuoteSnapshot:
    """What the ramp keeps of its quote (learned over gRPC)."""

    id: uuid.UUID
    ramp_type: str
    from_network: str
    to_network: str
    input_amount: Decimal
    input_currency: str
    output_amount: Decimal
    output_currency: str
    fee_total: Decimal
    status: str
    expires_at: datetime

    @property
    def corridor(self) -> str:
        """e.g. SELL:pendulum:sepa:USDC:EUR."""
        return ":".join(
            (
                self.ramp_type,
                self.from_network,
                self.to_network,
                self.input_currency,
                self.output_currency,
            )
        )


@dataclass(frozen=True)
class AdditionalData:
    """The user's wallet, destination and (PIX) tax id."""

    wallet_address: str = ""
    destination: str = ""
    tax_id: str = ""

    def merged(self, update: AdditionalData) -> AdditionalData:
        """This data with every non-empty field of `update` applied."""
        return AdditionalData(
            update.wallet_address or self.wallet_address,
            update.destination or self.destination,
            update.tax_id or self.tax_id,
        )


@dataclass(frozen=True)
class SigningAccount:
    """An ephemeral account."""

    network: Network
    address: str


@dataclass(frozen=True)
class IssuedTx:
    """An unsigned transaction the server built for an ephemeral to presign."""

    phase: str
    network: Network
    signer: str
    nonce: int
    tx_data: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PresignedTx:
    """A presigned transaction as the client sent it."""

    phase: str
    network: str
    signer: str
    nonce: int
    tx_data: str = ""
    signature: str = ""


def parse_signing_accounts(
    ramp_type: str, accounts: list[tuple[str, str]]
) -> dict[Network, SigningAccount]:
    """Exactly one account per network the ramp type needs, and nothing else."""
    required = REQUIRED_ACCOUNTS[ramp_type]
    violations: list[FieldViolation] = []
    parsed: dict[Network, SigningAccount] = {}
    for i, (network, address) in enumerate(accounts):
        where = f"signing_accounts[{i}]"
        if network not in {n.value for n in required}:
            violations.append(FieldViolation(f"{where}.network", f"not used by a {ramp_type} ramp"))
        elif Network(network) in parsed:
            violations.append(FieldViolation(f"{where}.network", "given twice"))
        elif not address:
            violations.append(FieldViolation(f"{where}.address", "required"))
        else:
            parsed[Network(network)] = SigningAccount(Network(network), address)
    for missing in sorted(required - set(parsed)):
        violations.append(FieldViolation("signing_accounts", f"a {missing} account is required"))
    if violations:
        raise InvalidRampRequest(violations)
    return parsed


def check_additional_data(quote: QuoteSnapshot, data: AdditionalData) -> None:
    """The fields the corridor needs are present and well-formed (format only)."""
    violations: list[FieldViolation] = []
    if not data.wallet_address:
        violations.append(FieldViolation("additional_data.wallet_address", "required"))
    if not data.destination:
        violations.append(FieldViolation("additional_data.destination", "required"))
    elif quote.to_network == "sepa" and not is_iban(data.destination):
        violations.append(FieldViolation("additional_data.destination", "must be a valid IBAN"))
    elif quote.to_network == "cbu" and not is_cbu(data.destination):
        violations.append(FieldViolation("additional_data.destination", "must be a valid CBU"))
    if quote.from_network == "pix" and not is_cpf_or_cnpj(data.tax_id):
        violations.append(FieldViolation("additional_data.tax_id", "must be a valid CPF or CNPJ"))
    if violations:
        raise InvalidRampRequest(violations)


def updated_data(record: RampRecord, update: AdditionalData) -> AdditionalData:
    """The ramp's data with `update`'s non-empty fields applied, checked. Where the money goes
    is fixed at register: the anchor withdrawal (SELL), the PIX charge and the XCM transfer
    (BUY) were made with it, so a later value would be shown but not paid to. Repeating the
    registered value is fine; the wallet address may change."""
    registered = record.additional_data
    violations = [
        FieldViolation(f"additional_data.{name}", "fixed at register; register a new ramp")
        for name in ("destination", "tax_id")
        if getattr(update, name) and getattr(update, name) != getattr(registered, name)
    ]
    if violations:
        raise InvalidRampRequest(violations)
    merged = registered.merged(update)
    check_additional_data(record.quote, merged)
    return merged


def is_iban(text: str) -> bool:
    """ISO 13616 IBAN with a valid mod-97 check."""
    iban = text.replace(" ", "").upper()
    # isascii first: isalpha/isdigit/isalnum also take letters and digits of other scripts
    # (é, ², ٣), which int(c, 36) refuses.
    if not (
        15 <= len(iban) <= 34
        and iban.isascii()
        and iban[:2].isalpha()
        and iban[2:4].isdigit()
        and iban.isalnum()
    ):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def is_cbu(text: str) -> bool:
    """Argentine CBU: 22 digits with two weighted check digits."""
    if len(text) != 22 or not (text.isascii() and text.isdigit()):
        return False

    def check(block: str, weights: tuple[int, ...]) -> bool:
        total = sum(int(d) * w for d, w in zip(block[:-1], weights, strict=False))
        return (10 - total % 10) % 10 == int(block[-1])

    return check(text[:8], (7, 1, 3, 9, 7, 1, 3)) and check(
        text[8:], (3, 9, 7, 1, 3, 9, 7, 1, 3, 9, 7, 1, 3)
    )


def is_cpf_or_cnpj(text: str) -> bool:
    """Brazilian CPF (11 digits) or CNPJ (14 digits) with valid check digits."""
    if not text.isascii():  # digits of other scripts (⁵, ٣) are no CPF's
        return False
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) == 11 and len(set(digits)) > 1:
        return all(_mod11_digit(digits[:n], range(n + 1, 1, -1)) == int(digits[n]) for n in (9, 10))
    if len(digits) == 14 and len(set(digits)) > 1:
        w1 = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
        w2 = (6, *w1)
        return _mod11_digit(digits[:12], w1) == int(digits[12]) and _mod11_digit(
            digits[:13], w2
        ) == int(digits[13])
    return False


def _mod11_digit(digits: str, weights: range | tuple[int, ...]) -> int:
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11
    return 0 if remainder < 2 else 11 - remainder


def parse_ramp_id(text: str, field_name: str = "ramp_id") -> uuid.UUID:
    """A ramp id is a canonical UUID."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        raise invalid("INVALID_RAMP_ID", field_name, "must be a UUID") from None
    if str(parsed) != text.lower():
        raise invalid("INVALID_RAMP_ID", field_name, "must be a UUID")
    return parsed


@dataclass(frozen=True)
class PhaseEntry:
    """A phase the ramp entered."""

    phase: str
    entered_at: datetime


@dataclass(frozen=True)
class RecordedError:
    """An error recorded while the ramp ran."""

    phase: str
    reason: str
    message: str
    recoverable: bool
    occurred_at: datetime


@dataclass(frozen=True)
class StoredTx:
    """An issued transaction with its presigned answer, when received."""

    issued: IssuedTx
    presigned_payload: str | None
    status: str


@dataclass(frozen=True)
class RampRecord:
    """Everything a reader sees of a ramp."""

    id: uuid.UUID
    quote: QuoteSnapshot
    status: RampStatus
    current_phase: str
    flow_version: str
    accounts: tuple[SigningAccount, ...]
    additional_data: AdditionalData
    txs: tuple[StoredTx, ...]
    partner_data: dict[str, str]
    history: tuple[PhaseEntry, ...]
    last_error: RecordedError | None
    start_deadline: datetime
    created_at: datetime
    updated_at: datetime
    request_hash: str

    def issued(self) -> list[IssuedTx]:
        """The transactions the user must presign."""
        return [tx.issued for tx in self.txs]

    def presigned_keys(self) -> set[tuple[str, str]]:
        """(phase, network) of every transaction already presigned."""
        return {(t.issued.phase, t.issued.network.value) for t in self.txs if t.presigned_payload}
