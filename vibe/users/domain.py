"""What user management's learning hooks carry: typed, frozen payloads (docs/plugins.md).

`vibe.users.progress.sync` builds both: a `CompletedItem` for `workshop_completed`, an
`Achievement` for `achievement_unlocked`. Times are Unix seconds. For one release each also
answers the dict access it replaced, with a DeprecationWarning (`vibe.plugins.payload.Payload`).
"""

from __future__ import annotations

import dataclasses

from vibe.plugins.payload import Payload, carries

payload = dataclasses.dataclass(frozen=True, kw_only=True)


@carries(("workshop_completed", "item"))
@payload
class CompletedItem(Payload):
    """A progress item as synced, completed for the first time (`workshop_completed`)."""

    resource_type: str  # `workshop` for workshop_completed
    resource_id: str  # the workshop's id (the hook's `workshop_id`)
    status: str  # `completed`
    progress: float  # 100.0
    completed_at: float | None  # when the learner completed it (the first completion is kept)
    title: str | None = None  # the workshop's title, when the announcer knows it (sync does not)


@carries(("achievement_unlocked", "achievement"))
@payload
class Achievement(Payload):
    """An achievement a learner unlocked for the first time (`achievement_unlocked`)."""

    key: str  # the `achievements` row's key (`first_workshop`, ...)
    name: str  # its display name
    description: str | None  # one sentence, or None
    unlocked_at: float  # when it was unlocked
