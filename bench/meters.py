"""Where a benchmark's CPU goes: the service process and PostgreSQL's backends serving it (from
/proc), the service's functions (py-spy), and the database's statements (its log).

CPU seconds hardly move when other work shares the machine, unlike rates; per event they compare
runs taken hours apart. The PostgreSQL figure is the user + system time of the backends connected
to the bench's database (the service's pool and its listener), not the server's background
processes.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg2

from bench.harness import SERVER_PIDS

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and every process descended from it (walking /proc/*/stat's parent ids)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(fields[1])].append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(parents.get(found[-1], ()))
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of `pid` and each of its descendants (`serve --workers N`: the parent,
    its workers, multiprocessing's resource tracker), by process id."""
    return {p: cpu for p in tree(pid) if (cpu := process_cpu(p)) is not None}


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


async def backends(db) -> list[int]:
    """PostgreSQL backends connected to `db`'s database, but the one asking."""
    rows = await db.fetchall("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                             "AND pid <> pg_backend_pid()")
    return [int(r["pid"]) for r in rows]


class Meter:
    """CPU seconds between start and stop: `service` (the server behind `base` with every
    process descended from it, e.g. `serve --workers N`'s workers) and `database`
    (the PostgreSQL backends of `db`'s database, None without `db`). A backend that appeared
    in between counts from zero; one that left in between is missed (the pool keeps them)."""

    def __init__(self, base: str, db=None):
        self.pid, self.db = SERVER_PIDS[base], db

    def start(self) -> "Meter":
        self._service, self._backends = tree_cpu(self.pid), {}
        return self

    async def astart(self) -> "Meter":
        self.start()
        if self.db is not None:
            self._backends = {pid: process_cpu(pid) or 0.0 for pid in await backends(self.db)}
        return self

    def stop(self) -> dict:
        now = tree_cpu(self.pid)
        return {"service": sum(cpu - self._service.get(pid, 0.0) for pid, cpu in now.items()), "database": None}

    async def astop(self) -> dict:
        out = self.stop()
        if self.db is not None:
            now = {pid: process_cpu(pid) for pid in await backends(self.db)}
            out["database"] = sum(cpu - self._backends.get(pid, 0.0) for pid, cpu in now.items() if cpu is not None)
        return out


class PySpy:
    """py-spy record of the service, non-blocking (it never stops the process), one raw file of
    collapsed stacks per round (every process of the service: `--subprocesses`); `report` ranks
    functions by own and by inclusive samples."""

    def __init__(self, base: str, folder: Path, label: str, rate: int = 250):
        if shutil.which("py-spy") is None:
            raise SystemExit("py-spy is not installed: pip install py-spy")
        self.pid, self.folder, self.label, self.rate = SERVER_PIDS[base], folder, label, rate
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._proc: subprocess.Popen | None = None

    def start(self, round_no: int) -> None:
        path = self.folder / f"{self.label}-round{round_no}.txt"
        self.files.append(path)
        self._proc = subprocess.Popen(["py-spy", "record", "--pid", str(self.pid), "--rate", str(self.rate),
                                       "--nonblocking", "--subprocesses", "--format", "raw", "--output", str(path)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
            await asyncio.to_thread(self._proc.wait)
            self._proc = None

    def report(self, top: int = 25) -> str:
        own: collections.Counter = collections.Counter()
        inclusive: collections.Counter = collections.Counter()
        total = 0
        for path in self.files:
            for line in path.read_text().splitlines() if path.exists() else []:
                stack, _, count = line.rpartition(" ")
                frames = [_short(f) for f in stack.split(";") if f]
                n = int(count)
                total += n
                if frames:
                    own[frames[-1]] += n
                for frame in set(frames):
                    inclusive[frame] += n
        lines = [f"py-spy, {self.label}: {total:,} samples ({', '.join(str(p) for p in self.files)})",
                 "  own time:"]
        lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)] if total else []
        lines.append("  inclusive, vibe and plugins:")
        ours = [(f, n) for f, n in inclusive.most_common() if "vibe/" in f or "plugins/" in f]
        lines += [f"    {n / total:6.1%}  {frame}" for frame, n in ours[:top]] if total else []
        return "\n".join(lines)


def _short(frame: str) -> str:
    """`function (path/to/file.py:12)` as `function (file.py)`, keeping vibe's package path."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("/vibe/", "/plugins/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = marker.strip("/") + "/" + path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


class PgStatementLog:
    """PostgreSQL's own CPU figures for every round trip of the bench's database
    (`log_statement_stats = on` for that database only, set and reset here: each query string
    is logged with the user and system CPU its backend spent on it), ranked by total CPU. A round
    trip is named by its last statement, the one its caller waited for (`[+ deferred]`: the
    deferred writes before it rode along, counted under it); prepared statements show as their
    text."""

    def __init__(self, log_path: str, database_url: str):
        self.path, self.url = Path(log_path), database_url

    def _set(self, value: str) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            (name,) = cur.fetchone()
            self.database = name
            cur.execute(f'ALTER DATABASE "{name}" {value}')
        conn.close()

    def begin(self) -> None:
        self._set("SET log_statement_stats = on")
        self.offset = self.counted_from = self.path.stat().st_size

    def mark(self) -> None:
        """Count from here (what came before, the seeding, only names prepared statements)."""
        self.counted_from = self.path.stat().st_size

    def end(self) -> None:
        self._set("RESET log_statement_stats")

    def report(self, events: int, top: int = 15) -> str:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        prepared: dict[str, str] = {}
        cpu: collections.Counter = collections.Counter()
        trips: collections.Counter = collections.Counter()
        statements: collections.Counter = collections.Counter()
        usage = re.compile(r"([\d.]+) s user, ([\d.]+) s system")
        pending: dict[str, float] = {}  # backend pid -> CPU of its round trip whose text comes next
        for line, end in _entries(text, self.offset):
            if f"@{self.database} " not in line[:120]:
                continue
            pid = line.split("[", 1)[1].split("]", 1)[0]
            if " DETAIL:  ! system usage stats:" in line:
                if match := usage.search(line):
                    pending[pid] = float(match.group(1)) + float(match.group(2))
                continue
            head, sep, sql = line.partition(" STATEMENT:  ")
            if not sep or pid not in pending:
                continue
            for name, body in re.findall(r"PREPARE (vibe_\d+) AS (.*?)\n; RELEASE SAVEPOINT vibe_prepare", sql, re.S):
                prepared[name] = body
            seconds = pending.pop(pid)
            if end <= self.counted_from:
                continue
            parts = [_normalise(p, prepared) for p in sql.split(";\n") if p.strip()]
            key = (parts[-1] if parts else "?") + (" [+ deferred]" if len(parts) > 1 else "")
            cpu[key] += seconds
            trips[key] += 1
            statements.update(parts)
        total = sum(cpu.values()) or 1e-9
        lines = [f"PostgreSQL, CPU by round trip (log_statement_stats): {sum(trips.values()):,} round trips, "
                 f"{total * 1e3:,.0f} ms of backend CPU for {events:,} events: {sum(trips.values()) / max(1, events):.2f} "
                 f"round trips and {total / max(1, events) * 1e6:,.0f} us per event"]
        for key, seconds in cpu.most_common(top):
            lines.append(f"  {seconds / total:6.1%} {trips[key] / max(1, events):5.2f}/event "
                         f"{seconds / trips[key] * 1e6:7.0f} us/trip  {key[:140]}")
        lines.append("  statements sent, per event (deferred ones included):")
        for key, n in statements.most_common(top):
            lines.append(f"  {n / max(1, events):6.2f}  {key[:140]}")
        return "\n".join(lines)


def _entries(text: str, offset: int):
    """Log entries (continuation lines joined with newlines), each with the file offset where
    it ends (about: characters, not bytes, past the first non-ASCII one)."""
    current: list[str] = []
    position = offset
    for line in text.splitlines(keepends=True):
        position += len(line)
        if re.match(r"^\d{4}-\d\d-\d\d ", line):
            if current:
                yield "\n".join(current), position
            current = [line.rstrip("\n")]
        elif current:
            current.append(line.rstrip("\n").removeprefix("\t"))
    if current:
        yield "\n".join(current), position


def _normalise(sql: str, prepared: dict[str, str]) -> str:
    execute = re.match(r"EXECUTE (vibe_\d+)", sql)
    if execute:
        sql = prepared.get(execute.group(1), execute.group(1))
    if sql.startswith("PREPARE "):
        return "PREPARE ..."
    sql = re.sub(r"'(?:[^']|'')*'", "'?'", sql)
    sql = re.sub(r"\b\d+(\.\d+)?\b", "?", sql)
    sql = re.sub(r"sp_\d+|vibe_\d+", "sp_?", sql)
    return " ".join(sql.split())
