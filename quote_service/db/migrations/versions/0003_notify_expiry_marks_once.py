"""Expiry marks notify once per statement, not once per quote.

Migration 0002 notified every update, and the cleanup job's expiry marks (PENDING to EXPIRED, a
thousand quotes a batch, tens of thousands a second) made each quote-service process handle one
notification per quote. Probe, 200,000 pending quotes past their expiry, GetQuote at half of its
peak beside the job, four rounds: p50 0.4 → 11–64 ms and p99 3–6 → 244–654 ms while the job ran
(requests failed in two rounds), against 1.9–2.9 and 31–61 ms when the marks notified nothing
(README, Performance).

Now an expiry mark (PENDING to EXPIRED, its expiry unchanged) notifies nothing of its own; a
statement trigger sends one `expired:<latest expiry among the quotes it marked, UTC, ISO 8601>`
for every statement that marked any, by any writer. A process then answers no PENDING ticket
expiring at or before that instant from memory (quote_service.db.ticket_cache). Every other
update (one that also moves the expiry included) still notifies its quote's id. The statement
trigger reads its transition tables on every UPDATE statement of the table (one row for
ConsumeQuote's). During the rollout the previous release's processes take the new payload for
one they do not know and forget every held ticket, as they would for a TRUNCATE: correct, and
only until they are replaced (or, after a rollback of the code, for as long as it lasts; see
docs/runbook.md).

Revision ID: 0003_notify_expiry_marks_once
Revises: 0002_notify_ticket_changes
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_notify_expiry_marks_once"
down_revision: str | None = "0002_notify_ticket_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_TRIGGER = """
CREATE OR REPLACE TRIGGER quote_tickets_updated AFTER UPDATE ON quote.quote_tickets
FOR EACH ROW {when} EXECUTE FUNCTION quote.notify_ticket_changed()
"""
NOT_AN_EXPIRY_MARK = (
    "WHEN (NOT (OLD.status = 'PENDING' AND NEW.status = 'EXPIRED'"
    " AND OLD.expires_at = NEW.expires_at))"
)
# Creating or dropping a trigger stops the table's writers (and its readers, for a drop), and
# they queue behind it while it waits: better to fail the migration (run again) than to stall.
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"


def upgrade() -> None:
    op.execute(LOCK_TIMEOUT)
    op.execute(
        """
        CREATE FUNCTION quote.notify_tickets_expired() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            latest timestamptz;
        BEGIN
            SELECT max(n.expires_at) INTO latest
            FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE o.status = 'PENDING' AND n.status = 'EXPIRED'
              AND o.expires_at = n.expires_at;
            IF latest IS NOT NULL THEN
                -- to_char, not ::text: the text of a timestamp follows the writer's DateStyle.
                PERFORM pg_notify(
                    'quote_ticket_changed',
                    'expired:' || to_char(latest AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
                );
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER quote_tickets_expired AFTER UPDATE ON quote.quote_tickets
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION quote.notify_tickets_expired()
        """
    )
    op.execute(ROW_TRIGGER.format(when=NOT_AN_EXPIRY_MARK))


def downgrade() -> None:
    op.execute(LOCK_TIMEOUT)
    op.execute(ROW_TRIGGER.format(when=""))
    op.execute("DROP TRIGGER quote_tickets_expired ON quote.quote_tickets")
    op.execute("DROP FUNCTION quote.notify_tickets_expired()")
