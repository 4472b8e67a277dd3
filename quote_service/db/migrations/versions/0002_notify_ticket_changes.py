"""Notify `quote_ticket_changed` with the ticket's id on every change a reader could see.

The quote service's processes hold tickets they read lately (quote_service.db.ticket_cache)
and drop one when told it changed, whoever changed it: ConsumeQuote in another process, the
cleanup job marking a quote EXPIRED, an operator by hand. Every update notifies (the cleanup's
expiry marks: once per quote never consumed, in bursts the listeners drop per id), and so does
every delete except of an EXPIRED quote: no process holds one (the cache refuses them), and the
cleanup job deletes them by the tens of thousands a second (a notification each would flood
every listener, each quote a second time). A TRUNCATE notifies once with an empty payload:
every process forgets all. No condition reads a clock, so a process's clock and the database's
need not agree. Nothing is added to inserts, CreateQuote's hot path.

Revision ID: 0002_notify_ticket_changes
Revises: 0001_create_quote_tickets
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_notify_ticket_changes"
down_revision: str | None = "0001_create_quote_tickets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION quote.notify_ticket_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_LEVEL = 'ROW' THEN
                PERFORM pg_notify('quote_ticket_changed', OLD.id::text);
            ELSE
                PERFORM pg_notify('quote_ticket_changed', '');  -- any of them: forget all
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER quote_tickets_updated AFTER UPDATE ON quote.quote_tickets
        FOR EACH ROW EXECUTE FUNCTION quote.notify_ticket_changed()
        """
    )
    op.execute(
        """
        CREATE TRIGGER quote_tickets_deleted AFTER DELETE ON quote.quote_tickets
        FOR EACH ROW WHEN (OLD.status <> 'EXPIRED')
        EXECUTE FUNCTION quote.notify_ticket_changed()
        """
    )
    op.execute(
        """
        CREATE TRIGGER quote_tickets_truncated AFTER TRUNCATE ON quote.quote_tickets
        FOR EACH STATEMENT EXECUTE FUNCTION quote.notify_ticket_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER quote_tickets_truncated ON quote.quote_tickets")
    op.execute("DROP TRIGGER quote_tickets_deleted ON quote.quote_tickets")
    op.execute("DROP TRIGGER quote_tickets_updated ON quote.quote_tickets")
    op.execute("DROP FUNCTION quote.notify_ticket_changed()")
