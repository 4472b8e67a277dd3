"""The statuses whose follow-up phases run are written in three places that must agree: the
claim statement, the claim's partial index (model and migration) and the Python set the
processor routes by."""

from __future__ import annotations

import re

from ramp_service.db.models import RampRow
from ramp_service.worker.queue import CLAIM_SQL, FOLLOW_UP_STATUSES


def follow_up_statuses(predicate: str) -> set[str]:
    """The statuses listed beside `cleanup_phase IS NOT NULL` in a claim predicate."""
    found = re.search(r"status IN \(([^)]*)\)\s*AND cleanup_phase IS NOT NULL", predicate)
    assert found, predicate
    return set(re.findall(r"'([A-Z_]+)'", found.group(1)))


def test_claim_statement_index_and_processor_agree() -> None:
    index = next(i for i in RampRow.__table__.indexes if i.name == "ix_ramps_due")
    predicate = str(index.dialect_options["postgresql"]["where"])
    assert follow_up_statuses(" ".join(CLAIM_SQL.split())) == set(FOLLOW_UP_STATUSES)
    assert follow_up_statuses(" ".join(predicate.split())) == set(FOLLOW_UP_STATUSES)
