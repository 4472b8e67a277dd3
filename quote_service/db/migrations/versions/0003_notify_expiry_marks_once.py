"""Expiry marks notify once per statement, not once per quote.

Migration 0002 notified every update, and the cleanup job's expiry marks (PENDING to EXPIRED, a
thousand quotes a batch, tens of thousands a second) made each quote-service process handle one
notification per quote. Probe, 200,000 pending quotes past their expiry, GetQuote at half of its
peak beside the job: p50 0.4 → 11–28 ms and p99 3–6 → 244–302 ms while the job ran, against
1.9–2.9 and 31–40 ms when the marks notified nothing (README, Performance).

Now a PENDING → EXPIRED update notifies nothing of its own; a statement trigger sends one
`expired:<latest expires_at of the quotes it marked, UTC>` for every statement that marked any,
by any writer. A process then answers no PENDING ticket expiring at or before that instant from
memory (quote_service.db.ticket_cache). Every other update still notifies its quote's id. The
statement trigger reads its transition tables on every UPDATE statement of the table (one row
for ConsumeQuote's). During the rollout the previous release's processes take the new payload
for one they do not know and forget every held ticket, as they would for a TRUNCATE: correct,
and only until they are replaced.

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
NOT_AN_EXPIRY_MARK = "WHEN (NOT (OLD.status = 'PENDING' AND NEW.status = 'EXPIRED'))"


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION quote.notify_tickets_expired() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            latest timestamptz;
        BEGIN
            SELECT max(n.expires_at) INTO latest
            FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE o.status = 'PENDING' AND n.status = 'EXPIRED';
            IF latest IS NOT NULL THEN
                PERFORM pg_notify(
                    'quote_ticket_changed', 'expired:' || (latest AT TIME ZONE 'UTC')::text
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
    op.execute(ROW_TRIGGER.format(when=""))
    op.execute("DROP TRIGGER quote_tickets_expired ON quote.quote_tickets")
    op.execute("DROP FUNCTION quote.notify_tickets_expired()")
