"""In-process caches bounded by bytes, with hit, miss and eviction counters.

Three caches live in AppKeys (see `setup`):

* `UserSessionCache` (USER_SESSION_CACHE_MB, default 10 MB, 15 min): verified tokens (until the
  token's own `exp` at the latest) and the profile each user resolves to.
* `ContentCache` (CONTENT_CACHE_MB, 20 MB, 30 min): access rules and achievement definitions.
* `DatabaseQueryCache` (QUERY_CACHE_MB, 15 MB, 5 min): results of read queries, keyed by the
  caller (`get(key)`, `set(key, value)`, `invalidate(prefix or predicate)`).

Each is a cachetools `TLRUCache` whose `getsizeof` is an estimate of the bytes an entry holds
(key and value, walked iteratively), so the bound is memory, not an entry count.

Invalidation races: a writer evicts inside its transaction (the `user_changed` hook), and again
once it has committed (`cache_sync`, through the transaction's `after_commit`); a reader that
loads the old row in between must not keep it. So every invalidation leaves a *fence* for
CACHE_FENCE_SECONDS (0.5 s): `set` refuses keys a fence matches, and refuses a value loaded
before the latest matching invalidation; the eviction after COMMIT drops whatever a reader put
back during a transaction longer than the fence. (On PostgreSQL the NOTIFY sent in the same
transaction is delivered after commit too, and evicts on every instance: see `cache_sync`.)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Hashable

from cachetools import TLRUCache

Match = Hashable | Callable[[Hashable], bool]

_ATOMIC = (int, float, bool, type(None), str, bytes)


def estimate_size(obj: Any) -> int:
    """Bytes held by `obj` and everything it references (containers, dataclasses, objects).

    Walked with a stack of its own, not by recursion: a value nested thousands deep costs a
    loop, never a RecursionError (issue 15). Shared objects (and long strings) count once."""
    total, seen, stack = 0, set(), [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _ATOMIC):
            if isinstance(item, (str, bytes)) and len(item) > 64:
                if id(item) in seen:
                    continue
                seen.add(id(item))
            total += sys.getsizeof(item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif dataclasses.is_dataclass(item):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif hasattr(item, "items") and callable(item.items):  # mapping proxies and the like
            for key, value in item.items():
                stack.append(key)
                stack.append(value)
        elif hasattr(item, "__dict__"):
            stack.append(vars(item))
    return total


@dataclasses.dataclass(slots=True)
class _Entry:
    value: Any
    deadline: float  # monotonic
    size: int


class _Store(TLRUCache):
    """TLRUCache that reports evictions (LRU for room; expiry is counted apart)."""

    def __init__(self, owner: "SizedCache", max_bytes: int):
        super().__init__(max_bytes, ttu=lambda _k, entry, _now: entry.deadline,
                         getsizeof=lambda entry: entry.size)
        self.owner = owner

    def popitem(self):
        item = super().popitem()
        self.owner.evictions += 1
        return item


class SizedCache:
    """A TLRU cache bounded by estimated bytes; entries live `ttl` seconds at most."""

    def __init__(self, name: str, max_bytes: int, ttl: float, *, fence_seconds: float = 0.5):
        self.name = name
        self.max_bytes = int(max_bytes)
        self.ttl = ttl
        self.fence_seconds = fence_seconds
        self._store = _Store(self, self.max_bytes)
        self._fences: list[tuple[float, Match]] = []  # (monotonic time of invalidation, match)
        self._key_fences: dict[Hashable, float] = {}  # exact keys invalidated -> when
        self.hits = self.misses = self.evictions = self.invalidations = self.rejected = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._store.get(key)
        if entry is None:
            self.misses += 1
            return default
        self.hits += 1
        return entry.value

    def set(self, key: Hashable, value: Any, *, expires_at: float | None = None,
            loaded_at: float | None = None) -> bool:
        """Store `value`; False when a fence refuses it or it is larger than the whole cache.

        `expires_at` (Unix time) shortens the entry's life below `ttl`; `loaded_at`
        (`time.monotonic()` taken before reading the value) lets a concurrent invalidation win.
        """
        now = time.monotonic()
        if self._fenced(key, now, loaded_at):
            self.rejected += 1
            return False
        deadline = now + self.ttl
        if expires_at is not None:
            deadline = min(deadline, now + (expires_at - time.time()))
        if deadline <= now:
            return False
        size = estimate_size(key) + estimate_size(value) + 64  # + the entry and its LRU/heap links
        if size > self.max_bytes:
            self.rejected += 1
            return False
        self._store[key] = _Entry(value, deadline, size)
        return True

    def invalidate(self, match: Match) -> int:
        """Forget entries: `match` is a key prefix (str or tuple) or a predicate over keys (a scan)."""
        test = _matcher(match)
        now = time.monotonic()
        self._fences = [(t, m) for t, m in self._fences if now - t < self.fence_seconds]
        self._fences.append((now, test))
        return self._drop([k for k in list(self._store.keys()) if test(k)])

    def invalidate_key(self, key: Hashable) -> int:
        """Forget one key (no scan; its fence is a dictionary entry)."""
        now = time.monotonic()
        fences = self._key_fences
        fences.pop(key, None)
        fences[key] = now  # insertion order is time order
        while len(fences) > 1024 and now - next(iter(fences.values())) >= self.fence_seconds:
            del fences[next(iter(fences))]
        return self._drop([key] if key in self._store else [])

    def _drop(self, keys: list) -> int:
        for key in keys:
            self._store.pop(key, None)
        self.invalidations += len(keys)
        return len(keys)

    def clear(self) -> None:
        """Forget everything (after a missed notification, for instance)."""
        self._fences.append((time.monotonic(), lambda _key: True))
        self._drop(list(self._store.keys()))

    def _fenced(self, key: Hashable, now: float, loaded_at: float | None) -> bool:
        at = self._key_fences.get(key)
        if at is not None and (now - at < self.fence_seconds or (loaded_at is not None and loaded_at <= at)):
            return True
        if not self._fences:
            return False
        for at, test in self._fences:
            if (now - at < self.fence_seconds or (loaded_at is not None and loaded_at <= at)) and test(key):
                return True
        if now - self._fences[-1][0] >= self.fence_seconds:
            self._fences.clear()
        return False

    def __len__(self) -> int:
        return len(self._store)

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "entries": len(self._store), "bytes": int(self._store.currsize),
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "invalidations": self.invalidations, "rejected": self.rejected}


def _matcher(match: Match) -> Callable[[Hashable], bool]:
    if callable(match):
        return match
    if isinstance(match, tuple):
        n = len(match)
        return lambda key: key == match or (isinstance(key, tuple) and key[:n] == match)
    if isinstance(match, str):
        return lambda key: isinstance(key, str) and key.startswith(match)
    return lambda key: key == match


class UserSessionCache(SizedCache):
    """Verified tokens (`("token", raw)` -> Principal) and profiles (`("profile", id)` -> dict)."""

    def principal(self, token: str):
        return self.get(("token", token))

    def put_principal(self, token: str, principal) -> None:
        self.set(("token", token), principal, expires_at=principal.expires_at)

    def profile(self, user_id: str) -> dict | None:
        return self.get(("profile", user_id))

    def put_profile(self, user_id: str, profile: dict, loaded_at: float) -> None:
        self.set(("profile", user_id), profile, loaded_at=loaded_at)

    def invalidate_user(self, user_id: str) -> int:
        return self.invalidate_key(("profile", user_id))


class ContentCache(SizedCache):
    """Content the platform serves to everyone: access rules, achievement definitions."""


class DatabaseQueryCache(SizedCache):
    """Results of read queries. Keys are tuples (`("user", user_id, "overview")`) or strings;
    `invalidate(("analytics",))` forgets every entry under that prefix (a scan: for hot paths,
    prefer `invalidate_key` with the exact key)."""
