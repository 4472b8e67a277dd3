"""`pendulumpay.ramp.v1.RampService`: protobuf ↔ domain, and idempotency keys for mutations.

Domain errors propagate to `service_kit.grpc_server.ServiceInterceptor`, which maps them.
"""

from __future__ import annotations

from datetime import datetime

import grpc

from pendulumpay.ramp.v1 import ramp_pb2, ramp_pb2_grpc
from ramp_service.domain.errors import InvalidRampRequest, RampNotFound
from ramp_service.domain.ramp import (
    AdditionalData,
    PresignedTx,
    RampRecord,
    RecordedError,
    parse_ramp_id,
)
from ramp_service.idempotency import IdempotencyStore
from ramp_service.service import RampService, RegisterCommand
from service_kit.errors import FieldViolation
from service_kit.protobuf import timestamp
from service_kit.rendered import Rendered

IDEMPOTENCY_KEY = "idempotency-key"


TEXT_MAX = 256  # addresses, IBANs, tax ids: far below; the wallet index's row limit far above


def _short(fields: dict[str, str]) -> None:
    """INVALID_RAMP_REQUEST naming every field longer than TEXT_MAX."""
    violations = [
        FieldViolation(name, f"at most {TEXT_MAX} characters")
        for name, value in fields.items()
        if len(value) > TEXT_MAX
    ]
    if violations:
        raise InvalidRampRequest(violations)


def _data(message: ramp_pb2.AdditionalData) -> AdditionalData:
    data = AdditionalData(message.wallet_address, message.destination, message.tax_id)
    _short({f"additional_data.{k}": v for k, v in vars(data).items()})
    return data


def _presigned(txs: list[ramp_pb2.PresignedTx]) -> list[PresignedTx]:
    return [PresignedTx(t.phase, t.network, t.signer, t.nonce, t.tx_data, t.signature) for t in txs]


def _masked(text: str, shown: int) -> str:
    """All but the last `shown` characters starred (none shown of a short text)."""
    kept = text[-shown:] if len(text) > 2 * shown else ""
    return "*" * (len(text) - len(kept)) + kept


def masked(message: ramp_pb2.Ramp) -> ramp_pb2.Ramp:
    """A ramp as its readers see it (GetRamp, a wallet's history): the user's tax id and
    destination (bank account, wallet) masked to their last characters. Anyone may read a
    wallet's history (its address is public on chain and proves nothing about the caller), and
    the history names each ramp's id; only the answers to register, update and start, to the
    caller who sent the data, show it whole."""
    data = message.additional_data
    data.tax_id = _masked(data.tax_id, 2)
    data.destination = _masked(data.destination, 4)
    return message


def listed(message: ramp_pb2.Ramp) -> ramp_pb2.Ramp:
    """A ramp as a wallet's history shows it: masked, and without the PIX charge's code (the
    ramp's own poll, GetRamp, shows that to the payer)."""
    masked(message).deposit_instructions.pix_copy_paste = ""
    return message


# Errors of our own code: their text (an exception's) is for operators, who have it in the
# worker's log and the database; the public API shows the reason and this.
INTERNAL_REASONS = frozenset({"PROCESSOR_ERROR", "HANDLER_ERROR"})
INTERNAL_MESSAGE = "internal error; operators have the details"


def error_to_proto(error: RecordedError) -> ramp_pb2.RampError:
    """A recorded error as the API shows it."""
    internal = error.reason in INTERNAL_REASONS or error.message.startswith(
        tuple(f"{reason}:" for reason in INTERNAL_REASONS)
    )
    return ramp_pb2.RampError(
        phase=error.phase,
        reason=error.reason,
        message=INTERNAL_MESSAGE if internal else error.message,
        recoverable=error.recoverable,
        occurred_at=timestamp(error.occurred_at),
    )


def ramp_to_proto(record: RampRecord) -> ramp_pb2.Ramp:
    """A ramp as the API shows it."""
    q = record.quote
    partner = record.partner_data
    if q.ramp_type == "BUY":
        # The PIX charge is opened at start: a registered ramp has none yet.
        deposit = ramp_pb2.DepositInstructions(
            pix_deposit_id=partner.get("pix_deposit_id", ""),
            pix_copy_paste=partner.get("pix_copy_paste", ""),
            amount=format(q.input_amount, "f"),
            currency=q.input_currency,
            network="pix",
        )
        if expires := partner.get("pix_expires_at"):
            deposit.pix_expires_at.CopyFrom(timestamp(datetime.fromisoformat(expires)))
    else:
        pendulum = next((a.address for a in record.accounts if a.network.value == "pendulum"), "")
        deposit = ramp_pb2.DepositInstructions(
            amount=format(q.input_amount, "f"),
            currency=q.input_currency,
            network=q.from_network,
            address=pendulum,
        )
    message = ramp_pb2.Ramp(
        id=str(record.id),
        quote_id=str(q.id),
        ramp_type=ramp_pb2.RampType.Value(q.ramp_type),
        status=ramp_pb2.Ramp.Status.Value(record.status.value),
        current_phase=record.current_phase,
        corridor=q.corridor,
        flow_version=record.flow_version,
        signing_accounts=[
            ramp_pb2.SigningAccount(network=a.network.value, address=a.address)
            for a in record.accounts
        ],
        additional_data=ramp_pb2.AdditionalData(
            wallet_address=record.additional_data.wallet_address,
            destination=record.additional_data.destination,
            tax_id=record.additional_data.tax_id,
        ),
        unsigned_txs=[
            ramp_pb2.UnsignedTx(
                phase=t.issued.phase,
                network=t.issued.network.value,
                signer=t.issued.signer,
                nonce=t.issued.nonce,
                tx_data=t.issued.tx_data,
                meta=t.issued.meta,
            )
            for t in record.txs
        ],
        deposit_instructions=deposit,
        phase_history=[
            ramp_pb2.PhaseEntry(phase=p.phase, entered_at=timestamp(p.entered_at))
            for p in record.history
        ],
        quote=ramp_pb2.QuoteSummary(
            input_amount=format(q.input_amount, "f"),
            input_currency=q.input_currency,
            output_amount=format(q.output_amount, "f"),
            output_currency=q.output_currency,
            fee_total=format(q.fee_total, "f"),
        ),
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        start_deadline=timestamp(record.start_deadline),
    )
    if record.last_error:
        message.last_error.CopyFrom(error_to_proto(record.last_error))
    return message


def _idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_KEY:
            return str(value)
    return None


class RampServicer(ramp_pb2_grpc.RampServiceServicer):
    """Translates RPCs to `RampService` use cases."""

    def __init__(self, service: RampService, idempotency: IdempotencyStore) -> None:
        self._service = service
        self._idempotency = idempotency
        # Ramp messages as last rendered, tagged with the version each shows: a poll of a ramp
        # that has not changed since answers the same message after one cheap version read
        # (any change, by any writer, changes the version: repository.VERSION_EXPR).
        self._rendered: Rendered[str, str, ramp_pb2.Ramp] = Rendered()

    async def RegisterRamp(
        self, request: ramp_pb2.RegisterRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        async def execute() -> ramp_pb2.Ramp:
            # Before any address is decoded: base58 decoding takes time quadratic in the text's
            # length (a 60,000-character "address" held the event loop for over a second).
            _short(
                {
                    f"signing_accounts[{i}].{field}": getattr(account, field)
                    for i, account in enumerate(request.signing_accounts)
                    for field in ("network", "address")
                }
            )
            command = RegisterCommand(
                request.quote_id,
                [(a.network, a.address) for a in request.signing_accounts],
                _data(request.additional_data),
            )
            return ramp_to_proto(await self._service.register(command))

        return await self._idempotency.run(
            "RegisterRamp", _idempotency_key(context), request, ramp_pb2.Ramp, execute
        )

    async def UpdateRamp(
        self, request: ramp_pb2.UpdateRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        async def execute() -> ramp_pb2.Ramp:
            record = await self._service.update(
                request.ramp_id,
                _presigned(list(request.presigned_txs)),
                _data(request.additional_data),
            )
            return ramp_to_proto(record)

        return await self._idempotency.run(
            "UpdateRamp", _idempotency_key(context), request, ramp_pb2.Ramp, execute
        )

    async def StartRamp(
        self, request: ramp_pb2.StartRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        async def execute() -> ramp_pb2.Ramp:
            record = await self._service.start(
                request.ramp_id,
                _presigned(list(request.presigned_txs)),
                _data(request.additional_data),
            )
            return ramp_to_proto(record)

        return await self._idempotency.run(
            "StartRamp", _idempotency_key(context), request, ramp_pb2.Ramp, execute
        )

    async def GetRamp(
        self, request: ramp_pb2.GetRampRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.Ramp:
        # Keyed by the canonical id: another spelling of it (upper case) is the same ramp.
        key = str(parse_ramp_id(request.id, "id"))
        cached = self._rendered.get(key)
        if cached is not None:
            try:
                current = await self._service.version(key)
            except RampNotFound:
                self._rendered.drop(key)
                raise
            if current == cached[0]:
                return cached[1]
        record, version = await self._service.get_versioned(key)
        message = masked(ramp_to_proto(record))
        self._rendered.put(key, version, message)
        return message

    async def GetRampErrors(
        self, request: ramp_pb2.GetRampErrorsRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.GetRampErrorsResponse:
        errors = await self._service.errors(request.id)
        return ramp_pb2.GetRampErrorsResponse(errors=[error_to_proto(e) for e in errors])

    async def ListRamps(
        self, request: ramp_pb2.ListRampsRequest, context: grpc.aio.ServicerContext
    ) -> ramp_pb2.ListRampsResponse:
        _short({"wallet_address": request.wallet_address})
        records, token = await self._service.list_by_wallet(
            request.wallet_address, request.page_size, request.page_token
        )
        return ramp_pb2.ListRampsResponse(
            ramps=[listed(ramp_to_proto(r)) for r in records], next_page_token=token
        )
