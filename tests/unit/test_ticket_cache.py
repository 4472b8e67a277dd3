"""The ticket cache's rules, without a database (its listener: tests/integration/quote)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from quote_service.adapters.pricing_file import load_pricing
from quote_service.db.ticket_cache import TicketCache
from quote_service.domain.pricing import QuoteRequest, price_quote
from quote_service.domain.quote import QuoteStatus, QuoteTicket, new_ticket

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def ticket() -> QuoteTicket:
    request = QuoteRequest("SELL", "pendulum", "sepa", "100", "USDC", "EUR")
    config, pools = load_pricing()
    return new_ticket(request, price_quote(request, config, pools), NOW, timedelta(minutes=10))


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def listening_cache(capacity: int = 8) -> tuple[TicketCache, Monotonic]:
    tick = Monotonic()
    cache = TicketCache(capacity, stale_after_s=3.0, monotonic=tick)
    cache.alive()
    return cache, tick


def test_a_held_ticket_is_answered_until_its_expiry() -> None:
    cache, _ = listening_cache()
    t = ticket()
    cache.put(t, cache.begin(), NOW)
    assert cache.get(t.id, NOW + timedelta(minutes=9, seconds=59)) is t
    assert cache.get(t.id, NOW + timedelta(minutes=10)) is None
    assert len(cache) == 0  # dropped, not kept for later


def test_a_read_that_began_before_a_change_of_its_ticket_is_not_kept() -> None:
    cache, _ = listening_cache()
    t, other = ticket(), ticket()
    token = cache.begin()
    cache.changed(t.id)  # its row may predate this change
    cache.put(t, token, NOW)
    assert cache.get(t.id, NOW) is None
    cache.put(t, cache.begin(), NOW)  # a read begun after the change
    assert cache.get(t.id, NOW) is t
    cache.changed(t.id)
    assert cache.get(t.id, NOW) is None

    token = cache.begin()
    cache.changed(t.id)  # another ticket's change (a burst of expiry marks, say)
    cache.put(other, token, NOW)
    assert cache.get(other.id, NOW) is other


def test_a_read_older_than_the_remembered_changes_is_not_kept() -> None:
    cache, _ = listening_cache(capacity=2)
    t = ticket()
    token = cache.begin()
    cache.changed(t.id)
    cache.changed(ticket().id)
    cache.changed(ticket().id)  # t's change is forgotten: the read might predate it
    cache.put(t, token, NOW)
    assert cache.get(t.id, NOW) is None
    cache.put(t, cache.begin(), NOW)
    assert cache.get(t.id, NOW) is t

    token = cache.begin()
    cache.changed(None)  # anything may have changed
    cache.put(ticket(), token, NOW)
    assert len(cache) == 0


def test_nothing_is_answered_or_kept_unless_the_listener_proved_itself_lately() -> None:
    tick = Monotonic()
    cache = TicketCache(8, stale_after_s=3.0, monotonic=tick)
    t = ticket()
    cache.put(t, cache.begin(), NOW)  # never listened
    assert len(cache) == 0
    cache.alive()
    cache.put(t, cache.begin(), NOW)
    tick.now += 2.9
    assert cache.get(t.id, NOW) is t
    tick.now += 0.2  # no heartbeat for longer than stale_after_s: a silently cut connection
    assert cache.get(t.id, NOW) is None
    cache.alive()
    assert cache.get(t.id, NOW) is t  # nothing was missed while it answered heartbeats


def test_a_lost_connection_forgets_everything_and_voids_reads_in_flight() -> None:
    cache, _ = listening_cache()
    t, u = ticket(), ticket()
    cache.put(t, cache.begin(), NOW)
    token = cache.begin()
    cache.deaf()
    cache.alive()  # listening again
    cache.put(u, token, NOW)
    assert (cache.get(t.id, NOW), cache.get(u.id, NOW), len(cache)) == (None, None, 0)


def test_a_ticket_stored_expired_is_never_held() -> None:
    """Revoked by hand before its expiry: its eventual delete sends no notification."""
    cache, _ = listening_cache()
    t = dataclasses.replace(ticket(), status=QuoteStatus.EXPIRED)
    cache.put(t, cache.begin(), NOW)
    assert cache.get(t.id, NOW) is None


def test_bounded_least_recently_used_first_and_size_zero_holds_nothing() -> None:
    cache, _ = listening_cache(capacity=2)
    a, b, c = ticket(), ticket(), ticket()
    for t in (a, b):
        cache.put(t, cache.begin(), NOW)
    assert cache.get(a.id, NOW) is a  # b is now the least recently used
    cache.put(c, cache.begin(), NOW)
    assert (cache.get(a.id, NOW), cache.get(b.id, NOW), cache.get(c.id, NOW)) == (a, None, c)

    off = TicketCache(0)
    off.alive()
    off.put(a, off.begin(), NOW)
    assert (off.serving, off.get(a.id, NOW), len(off)) == (False, None, 0)


def test_pending_tickets_expiring_by_the_marked_instant_are_not_answered_or_kept() -> None:
    """The database marked quotes EXPIRED through an instant (one notification per batch of
    marks): by a clock ahead of this process's, the pending tickets expiring by then may be
    among them. Later ones, and consumed ones, are still answered."""
    cache, _ = listening_cache()
    marked = ticket()  # expires at NOW + 10 min
    later = dataclasses.replace(ticket(), expires_at=NOW + timedelta(minutes=11))
    consumed = dataclasses.replace(ticket(), status=QuoteStatus.CONSUMED)
    for t in (marked, later, consumed):
        cache.put(t, cache.begin(), NOW)
    in_flight = ticket()
    token = cache.begin()  # its read began before the notification
    cache.marked_expired_through(NOW + timedelta(minutes=10))
    cache.put(in_flight, token, NOW)
    assert cache.get(in_flight.id, NOW) is None
    assert cache.get(marked.id, NOW) is None  # this process's clock says pending: not asked
    cache.put(marked, cache.begin(), NOW)  # nor kept again
    assert cache.get(marked.id, NOW) is None
    assert (cache.get(later.id, NOW), cache.get(consumed.id, NOW)) == (later, consumed)

    cache.marked_expired_through(NOW)  # an older batch's notification: the bound only rises
    cache.put(marked, cache.begin(), NOW)
    assert cache.get(marked.id, NOW) is None
    cache.marked_expired_through(NOW + timedelta(minutes=11))
    assert cache.get(later.id, NOW) is None
