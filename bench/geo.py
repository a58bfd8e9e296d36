#!/usr/bin/env python3
"""What the geographic decision costs a request (vibe/web/geo.py), in this process.

    python bench/geo.py [--database path/GeoLite2-Country.mmdb] [--networks 50000] [--calls 20000] [--runs 5]

Without --database it builds a MaxMind-format file with mmdb-writer (the test extra): --networks
random IPv4 /24s and IPv6 /48s over 60 countries, so the lookup walks a tree of a real country
file's depth. It then times `Geo.decide(request)` (the country and the rule, what the middleware
does before it answers 451 or calls the handler) on requests that came through a trusted proxy:

* header mode: GEO_COUNTRY_HEADER from the proxy;
* database mode, cold: every request from a client IP not seen before (an LRU miss: the
  reader's lookup, and the entry evicting another once the cache is full);
* database mode, cached: client IPs seen before (an LRU hit);
* the middleware around a bare handler, against the bare handler alone (a blocked request and
  an allowed one).

Each figure is the median over --runs runs of the mean per call over --calls calls (requests are
built beforehand, each used once: the client IP is computed once per request). Benchmarks print;
they never assert on time.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the project, not bench/

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from bench.harness import describe_machine
from vibe.config import Settings
from vibe.web import geo
from vibe.web.keys import GEO, TRUSTED_NETS
from vibe.web.ratelimit import client_ip_of

PATH = "/functions/v1/user-management"
PROXY = "10.0.0.1"
COUNTRIES = [a + b for a in "ABCDEFGHIJ" for b in "MNOPRS"]  # 60 two-letter codes (not all real)


def build_database(path: Path, networks: int, rng: random.Random) -> dict[str, list[str]]:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    by_country: dict[str, list[str]] = {c: [] for c in COUNTRIES}
    for i in range(networks):
        country = COUNTRIES[i % len(COUNTRIES)]
        if i % 4:
            net = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
        else:
            net = f"2a{rng.randrange(16):x}{rng.randrange(16):x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/48"
        by_country[country].append(net)
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for country, nets in by_country.items():
        writer.insert_network(IPSet(nets), {"country": {"iso_code": country}})
    writer.to_db_file(str(path))
    return by_country


def client_ips(count: int, networks: list[str], rng: random.Random) -> list[str]:
    """Client addresses, IPv4 and IPv6: nine in ten in some network of the database, one in ten not."""
    out = []
    for i in range(count):
        if i % 10 == 0:
            out.append(f"192.0.2.{rng.randrange(256)}" if i % 20 else f"2001:db8::{rng.randrange(65536):x}")
            continue
        net = ipaddress.ip_network(rng.choice(networks))
        out.append(str(net[rng.randrange(1, min(net.num_addresses, 1 << 16))]))
    return out


def app_for(env: dict[str, str]) -> web.Application:
    settings = Settings.from_env({"RATE_LIMIT_TRUSTED_PROXIES": PROXY, **env})
    app = web.Application()
    app[TRUSTED_NETS] = (ipaddress.ip_network(PROXY),)
    app[GEO] = geo.Geo(settings)
    return app


class Request(dict):
    """What the decision reads of an aiohttp request: `app`, `remote` (a reified attribute in
    aiohttp), `headers` (the same CIMultiDictProxy), `path`, and the request's own mapping."""

    def __init__(self, app: web.Application, headers: dict[str, str]):
        super().__init__()
        self.app, self.remote, self.path = app, PROXY, PATH
        self.headers = CIMultiDictProxy(CIMultiDict(headers))


def requests(app: web.Application, headers: list[dict[str, str]]) -> list[Request]:
    return [Request(app, h) for h in headers]


def per_call(fn, batches: list[list[Request]]) -> float:
    """Median over the batches of the mean µs per call."""
    means = []
    for batch in batches:
        start = time.perf_counter()
        for request in batch:
            fn(request)
        means.append((time.perf_counter() - start) / len(batch) * 1e6)
    return statistics.median(means)


async def per_await(call, batches: list[list[Request]]) -> float:
    means = []
    for batch in batches:
        start = time.perf_counter()
        for request in batch:
            await call(request)
        means.append((time.perf_counter() - start) / len(batch) * 1e6)
    return statistics.median(means)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="a real country file (GeoLite2-Country.mmdb, dbip-country-lite.mmdb)")
    parser.add_argument("--networks", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(19)
    print(f"geo decision: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.database) if args.database else Path(tmp) / "bench.mmdb"
        networks = ["81.2.69.0/24", "2.125.160.0/24", "89.160.20.0/24", "2001:218::/32", "2a02:cf40::/29"]
        if not args.database:
            started = time.perf_counter()
            networks = [n for nets in build_database(path, args.networks, rng).values() for n in nets]
            print(f"built {path.name}: {args.networks} networks, {path.stat().st_size / 1e6:.1f} MB "
                  f"in {time.perf_counter() - started:.1f} s")
        blocked = COUNTRIES[0]

        header_app = app_for({"GEO_COUNTRY_HEADER": "CF-IPCountry", "GEO_BLOCKED_COUNTRIES": blocked})
        db_app = app_for({"GEOIP_DATABASE": str(path), "GEO_BLOCKED_COUNTRIES": blocked})
        database = db_app[GEO].database
        described = database.describe()
        print(f"database: {described['type']}, built {described['built']}, cache {geo.CACHE_SIZE} entries")

        def runs(app, make_headers) -> list[list[Request]]:
            return [requests(app, [make_headers(i) for i in range(args.calls)]) for _ in range(args.runs)]

        header_batches = runs(header_app, lambda i: {"CF-IPCountry": COUNTRIES[i % len(COUNTRIES)]})
        figures = {"header mode": per_call(header_app[GEO].decide, header_batches)}

        fresh = client_ips(args.calls * args.runs, networks, rng)  # each seen once: every lookup misses
        database.lookup.cache_clear()
        cold_batches = [requests(db_app, [{"X-Forwarded-For": fresh[r * args.calls + i]} for i in range(args.calls)])
                        for r in range(args.runs)]
        figures["database, cold (LRU miss)"] = per_call(db_app[GEO].decide, cold_batches)
        misses = database.lookup.cache_info().misses

        warm = client_ips(min(geo.CACHE_SIZE // 2, args.calls), networks, rng)
        for ip in warm:
            database.lookup(ip)
        warm_batches = runs(db_app, lambda i: {"X-Forwarded-For": warm[i % len(warm)]})
        figures["database, cached (LRU hit)"] = per_call(db_app[GEO].decide, warm_batches)
        figures["  of which the client IP (ratelimit)"] = per_call(client_ip_of, runs(
            db_app, lambda i: {"X-Forwarded-For": warm[i % len(warm)]}))
        known = sum(1 for ip in fresh[: args.calls] if database.lookup(ip) is not None)

        async def bare(request: Request) -> web.StreamResponse:
            return web.Response()

        plain = runs(db_app, lambda i: {"X-Forwarded-For": warm[i % len(warm)]})
        with_geo = runs(db_app, lambda i: {"X-Forwarded-For": warm[i % len(warm)]})
        bare_us = await per_await(bare, plain)
        wrapped_us = await per_await(lambda r: geo.geo_middleware(r, bare), with_geo)

        print(f"\n{'decision per request':34} {'µs (median of ' + str(args.runs) + ' runs)':>22}")
        for name, us in figures.items():
            print(f"{name:34} {us:>22.2f}")
        print(f"{'bare handler, awaited':34} {bare_us:>22.2f}")
        share = sum(1 for ip in warm if database.lookup(ip) == blocked) / len(warm)
        print(f"{'geo middleware + bare handler':34} {wrapped_us:>22.2f}   (+{wrapped_us - bare_us:.2f} µs; "
              f"{share:.1%} of these requests are refused: their 451 JSON body is in the figure)")
        print(f"\ncold run: {misses} lookups missed the cache; {known / args.calls:.0%} of those client IPs "
              "fall in some network")


if __name__ == "__main__":
    asyncio.run(main())
