"""Loading the records of claimed ramps: one statement for every ramp a claim starts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ramp_service.db.repository import fetch_records
from ramp_service.domain.ramp import RampRecord
from service_kit.coalesce import Coalescer
from service_kit.db import DirectPool


class RecordLoader:
    """`await loader(ramp_id)`: the ramp's record; concurrent loads share one prepared read."""

    def __init__(self, direct: DirectPool) -> None:
        self._direct = direct
        self._loads: Coalescer[uuid.UUID, RampRecord | None] = Coalescer(self._load_many)

    async def __call__(self, ramp_id: uuid.UUID) -> RampRecord:
        record = await self._loads.submit(ramp_id)
        if record is None:  # a claimed ramp exists: rows are never deleted while leased
            raise LookupError(f"claimed ramp {ramp_id} not found")
        return record

    async def _load_many(self, ramp_ids: Sequence[uuid.UUID]) -> list[RampRecord | None]:
        async with self._direct.connection() as conn:
            records = await fetch_records(conn, ramp_ids)
        return [records.get(i) for i in ramp_ids]
