"""What a Stripe handler raises to say how an event ended other than "processed".

Each rolls back what the handler did so far (the handler runs in a savepoint).
"""

from __future__ import annotations


class EventOutcome(Exception):
    status = "processed"


class EventStale(EventOutcome):
    """A newer event about the same object was already applied; this one changes nothing."""

    status = "stale"


class EventIgnored(EventOutcome):
    """Nothing on the platform corresponds to this event (say, a customer of no known user)."""

    status = "ignored"


class WaitForCustomer(EventOutcome):
    """The event names a Stripe customer not yet linked to a user: park it until the link."""

    status = "waiting"

    def __init__(self, customer_id: str):
        super().__init__(f"waiting for Stripe customer {customer_id} to be linked to a user")
        self.customer_id = customer_id
