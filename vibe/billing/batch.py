"""What a dispatcher batch reads once for all its events: the versions recorded for the objects
they are about (locked), and the profiles linked to the customers they name.

Without it each `customer.subscription.*` event paid two round trips of its own (`claim_version`'s
upsert, `resolve_user`'s read); with it a batch pays two in all, and its events none:

- `claim` answers `claim_version` from the versions read here, locked `FOR UPDATE` in object order
  (so no other transaction can record a newer version before this one commits), and gathers the
  new versions into one multi-row upsert written before COMMIT (`tx.collect`: dropped with the
  savepoint of an event that fails). An object with no recorded version yet is not locked by the
  read, so it goes to the database as before (its upsert takes the row).
- `linked` answers `resolve_user` for a customer linked before the batch began; each event sees
  the profiles as the batch's earlier events left them (`ctx.profiles`, kept current by
  `update_profile`), and an event that fails leaves them as they were before it.

An event's own order guard is unchanged: the batch runs in (`created`, lifecycle rank) order, and
each claim compares with the newest version recorded or claimed before it.
"""

from __future__ import annotations

from typing import Any

from vibe.db.database import Transaction, any_of, rows_source

VERSION_COLUMNS = ("object_id", "event_created", "event_rank", "event_id")
_NEWER = ("WHERE stripe_object_versions.event_created < excluded.event_created OR "
          "(stripe_object_versions.event_created = excluded.event_created AND "
          "stripe_object_versions.event_rank <= excluded.event_rank)")


def _object(event: Any) -> dict:
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def object_of(event: Any) -> str | None:
    """The id of the object an event is about."""
    object_id = _object(event).get("id")
    return object_id if isinstance(object_id, str) and object_id else None


def customer_of(event: Any) -> str | None:
    """The Stripe customer an event is about: the object's `customer`, or the customer itself."""
    obj = _object(event)
    customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer else None


class BatchReads:
    def __init__(self) -> None:
        self.versions: dict[str, tuple[int, int]] = {}  # object id -> newest (created, rank), locked
        self.customers: dict[str, str] = {}  # customer id -> user id, linked before the batch
        self.profiles: dict[str, dict[str, Any]] = {}  # user id -> profile, as the batch left it
        self._undo: list[tuple[str, tuple[int, int] | None]] = []

    @classmethod
    async def read(cls, tx: Transaction, events: list[dict]) -> "BatchReads":
        reads = cls()
        objects = sorted({o for o in map(object_of, events) if o})
        if objects:
            where, params = any_of(tx, "object_id", objects)
            for row in await tx.fetchall("SELECT object_id, event_created, event_rank FROM stripe_object_versions "
                                         f"WHERE {where} ORDER BY object_id FOR UPDATE", params):
                reads.versions[row["object_id"]] = (int(row["event_created"]), int(row["event_rank"]))
        customers = sorted({c for c in map(customer_of, events) if c})
        if customers:
            where, params = any_of(tx, "c.customer_id", customers)
            for row in await tx.fetchall("SELECT c.customer_id AS batch_customer, p.* FROM stripe_customers c "
                                         f"JOIN profiles p ON p.id = c.user_id WHERE {where}", params):
                reads.customers[row.pop("batch_customer")] = row["id"]
                reads.profiles[row["id"]] = row
        return reads

    def begin(self, ctx: Any) -> None:
        """An event starts: it sees the profiles as the batch's earlier events left them."""
        self._undo = []
        ctx.profiles.update(self.profiles)

    def end(self, ctx: Any, ok: bool) -> None:
        """An event ended: what it claimed and read stays if it succeeded, else is undone."""
        if ok:
            for user_id in self.profiles:
                if user_id in ctx.profiles:
                    self.profiles[user_id] = ctx.profiles[user_id]
            return
        for object_id, before in reversed(self._undo):
            if before is None:
                del self.versions[object_id]
            else:
                self.versions[object_id] = before

    def linked(self, ctx: Any, customer_id: str) -> dict[str, Any] | None:
        """The profile of the user `customer_id` was linked to before the batch, else None."""
        user_id = self.customers.get(customer_id)
        return None if user_id is None else ctx.profiles.get(user_id)

    def claim(self, ctx: Any, object_id: str, rank: int) -> bool | None:
        """`claim_version` from the versions read (None: not read, ask the database)."""
        recorded = self.versions.get(object_id)
        if recorded is None:
            return None
        mine = (int(ctx.created), rank)
        if recorded > mine:
            return False
        self.claimed(object_id, mine, recorded)
        ctx.tx.collect(write_versions).append((object_id, mine[0], rank, ctx.event_id))
        return True

    def claimed(self, object_id: str, version: tuple[int, int], before: tuple[int, int] | None = None) -> None:
        """`object_id` is at `version` now, recorded by this transaction (and locked)."""
        self._undo.append((object_id, before))
        self.versions[object_id] = version


async def write_versions(tx: Transaction, claims: list[tuple]) -> None:
    """The batch's claims, one row per object (the newest: claims come in batch order), in one
    statement; it keeps `claim_version`'s guard, so it can never record an older version."""
    newest = {claim[0]: claim for claim in claims}
    source, params = rows_source(tx, "stripe_object_versions", VERSION_COLUMNS, [newest[k] for k in sorted(newest)])
    tx.defer(f"INSERT INTO stripe_object_versions ({', '.join(VERSION_COLUMNS)}) {source} "
             "ON CONFLICT (object_id) DO UPDATE SET event_created = excluded.event_created, "
             f"event_rank = excluded.event_rank, event_id = excluded.event_id {_NEWER}", params)
