"""LDAP sign-on: Authenticate through gunicorn beside a bare ldap3 bind loop, in the same run.

Usage::

    python benchmarks/ldap_auth.py [--duration S] [--rounds N] [--workers N] [--threads N]
                                   [--warmup S] [--json] [--httpx]

Starts a local slapd (the test suite's fixture: same schema, users and nested groups) and
``st-provider serve`` (gunicorn, ``--workers`` x ``--threads``, a fresh SQLite database) with
search-then-bind LDAP settings, then measures, in alternating rounds so a burst of other work
on the machine hits every row:

=========================  ================================================================
row                        what runs
=========================  ================================================================
ours: Authenticate         SOAP 1.1 ``Authenticate`` for ``alice`` with her password, over
                           keep-alive connections (wrk, else a threaded httpx client):
                           router, codec, throttle check and reset (SQLite), service-account
                           search, bind on a short-lived connection, group search, answer
ours: GetSignInCookieInfo  the same user without a password: the cached lookup path
floor: search + bind       bare ldap3 in ``--workers`` processes x ``--threads`` threads: a
                           search on a kept service connection, then a bind as the found DN
                           on a new connection (the least any search-then-bind provider does)
floor: bind                bare ldap3: open a connection, bind as alice, unbind
=========================  ================================================================

It prints requests/s, p50 and p99 latency per row and the ratios of ours to the floor (the
median of the per-round ratios). Nothing is asserted: a reader (or CI) judges the ratios.
With the defaults the run takes well under a minute. Exit status 0 when measured, 2 when a
server did not start or a sample answer was wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ldap3
from _common import (
    REPO,
    LoadResult,
    LoadSpec,
    check_answer,
    combine,
    generator_name,
    measure_load,
    percentile,
    provider_env,
    provider_server,
)

from provider.domain import Operation
from provider.soap.client import build_envelope, request_headers
from tests.fixtures.slapd import USERS, BlackHole, SlapdServer, start_slapd, stop_process

NAMESPACE = "http://tempuri.org/"
PASSWORD = "bench-ws-password"


# --- the floor: bare ldap3 ----------------------------------------------------------------------


def _bare_worker(args: tuple[str, int, str, int, float, dict[str, str]]) -> tuple[list[float], int]:
    """One process of the floor: ``threads`` threads looping for ``seconds``; (latencies, errors)."""
    mode, port, _host, threads, seconds, data = args
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    gate = threading.Barrier(threads)

    def server() -> ldap3.Server:
        return ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE, connect_timeout=5)

    def bind(index: int) -> bool:
        connection = ldap3.Connection(
            server(),
            user=data["dn"],
            password=data["password"],
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=5,
            auto_referrals=False,
        )
        connection.open(read_server_info=False)
        ok = bool(connection.bind(read_server_info=False))
        connection.unbind()
        return ok

    def run(index: int) -> None:
        service = None
        if mode == "search+bind":
            service = ldap3.Connection(
                server(),
                user=data["service_dn"],
                password=data["service_password"],
                auto_bind=ldap3.AUTO_BIND_NO_TLS,
                receive_timeout=5,
                auto_referrals=False,
            )
        gate.wait()
        deadline = time.perf_counter() + seconds
        own = latencies[index]
        while True:
            began = time.perf_counter()
            if began >= deadline:
                break
            try:
                ok = True
                if service is not None:
                    service.search(data["base"], "(uid=alice)", attributes=["*", "memberOf"], size_limit=3)
                    ok = len(service.entries) == 1
                ok = bind(index) and ok
            except ldap3.core.exceptions.LDAPException:
                ok = False
            own.append(time.perf_counter() - began)
            if not ok:
                errors[index] += 1
        if service is not None:
            service.unbind()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 60)
    return [x for own in latencies for x in own], sum(errors)


def measure_floor(
    mode: str, slapd: SlapdServer, *, workers: int, threads: int, seconds: float, pool: Any
) -> LoadResult:
    data = {
        "dn": USERS["alice"].dn,
        "password": USERS["alice"].password,
        "service_dn": slapd.service_dn,
        "service_password": slapd.service_password,
        "base": slapd.people_dn,
    }
    began = time.perf_counter()
    results = pool.map(_bare_worker, [(mode, slapd.port, "127.0.0.1", threads, seconds, data)] * workers)
    elapsed = time.perf_counter() - began
    latencies = [x * 1000 for lat, _ in results for x in lat]
    errors = sum(e for _, e in results)
    return LoadResult(
        label=f"floor: {mode}",
        generator=f"ldap3 {workers}x{threads}",
        requests=len(latencies),
        seconds=min(elapsed, seconds + 0.5),
        errors=errors,
        p50_ms=percentile(latencies, 50) if latencies else 0.0,
        p99_ms=percentile(latencies, 99) if latencies else 0.0,
        mean_ms=statistics.fmean(latencies) if latencies else 0.0,
    )


# --- ours -------------------------------------------------------------------------------------


def soap_spec(
    url: str, operation: Operation, entries: list[str], connections: int, expect: bytes
) -> LoadSpec:
    return LoadSpec(
        url=url,
        body=build_envelope(operation, entries, namespace=NAMESPACE),
        headers=request_headers(operation, namespace=NAMESPACE),
        connections=connections,
        threads=2,
        expect=expect,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per row in total (6)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--httpx", action="store_true", help="use the httpx load generator even if wrk is there"
    )
    args = parser.parse_args(argv)
    per_round = max(1.0, args.duration / max(1, args.rounds))
    connections = args.workers * args.threads

    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp:
        workdir = Path(tmp)
        hole = BlackHole()
        slapd, slapd_process = start_slapd(workdir / "slapd", f"{hole.url}/ou=partners,dc=elsewhere,dc=test")
        try:
            env = provider_env(
                PASSWORD,
                f"sqlite:///{workdir / 'provider.db'}",
                **slapd.env(),
                ST_PROVIDER_LOG_LEVEL="warning",
                ST_PROVIDER_THROTTLE_MAX_FAILURES_PER_ADDRESS="1000000",
            )
            server_stack = contextlib.ExitStack()
            try:
                server = server_stack.enter_context(
                    provider_server(
                        env,
                        workdir / "serve.log",
                        workers=args.workers,
                        threads=args.threads,
                        no_worker=True,
                    )
                )
            except RuntimeError as exc:
                print(f"the provider did not start: {exc}", file=sys.stderr)
                return 2
            try:
                alice = USERS["alice"]
                auth = soap_spec(
                    server.endpoint,
                    Operation.AUTHENTICATE,
                    [f"authPW={PASSWORD}", "loginUsername=alice", f"loginPassword={alice.password}"],
                    connections,
                    b"Authentication=OK",
                )
                cookie = soap_spec(
                    server.endpoint,
                    Operation.GET_SIGN_IN_COOKIE_INFO,
                    [f"authPW={PASSWORD}", "loginUsername=alice"],
                    connections,
                    b"Authentication=OK",
                )
                context = multiprocessing.get_context("spawn")
                try:
                    check_answer(auth)
                    check_answer(cookie)
                except RuntimeError as exc:
                    print(str(exc), file=sys.stderr)
                    return 2
                generator = generator_name(args.httpx)
                with context.Pool(args.workers) as pool:
                    if args.warmup > 0:
                        measure_load("warmup", auth, args.warmup, force_httpx=args.httpx)
                        measure_floor(
                            "bind", slapd, workers=args.workers, threads=args.threads, seconds=0.5, pool=pool
                        )
                    rows: dict[str, list[LoadResult]] = {}
                    for _ in range(args.rounds):
                        for label, run in (
                            (
                                "ours: Authenticate",
                                lambda: measure_load(
                                    "ours: Authenticate",
                                    auth,
                                    per_round,
                                    force_httpx=args.httpx,
                                    server_pgid=server.pid,
                                ),
                            ),
                            (
                                "floor: search + bind",
                                lambda: measure_floor(
                                    "search+bind",
                                    slapd,
                                    workers=args.workers,
                                    threads=args.threads,
                                    seconds=per_round,
                                    pool=pool,
                                ),
                            ),
                            (
                                "ours: GetSignInCookieInfo",
                                lambda: measure_load(
                                    "ours: GetSignInCookieInfo",
                                    cookie,
                                    per_round,
                                    force_httpx=args.httpx,
                                    server_pgid=server.pid,
                                ),
                            ),
                            (
                                "floor: bind",
                                lambda: measure_floor(
                                    "bind",
                                    slapd,
                                    workers=args.workers,
                                    threads=args.threads,
                                    seconds=per_round,
                                    pool=pool,
                                ),
                            ),
                        ):
                            rows.setdefault(label, []).append(run())
            finally:
                server_stack.close()
        finally:
            stop_process(slapd_process)
            hole.close()

    combined = {label: combine(label, results) for label, results in rows.items()}

    def ratio(a: str, b: str, attr: str) -> float:
        values = [
            getattr(x, attr) / getattr(y, attr)
            for x, y in zip(rows[a], rows[b], strict=True)
            if getattr(y, attr)
        ]
        return statistics.median(values) if values else 0.0

    ratios = {
        "authenticate_rps_vs_search_bind": ratio("ours: Authenticate", "floor: search + bind", "rps"),
        "authenticate_p50_vs_search_bind": ratio("ours: Authenticate", "floor: search + bind", "p50_ms"),
        "authenticate_rps_vs_bind": ratio("ours: Authenticate", "floor: bind", "rps"),
        "cookie_rps_vs_search_bind": ratio("ours: GetSignInCookieInfo", "floor: search + bind", "rps"),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "generator": generator,
                    "workers": args.workers,
                    "threads": args.threads,
                    "rounds": args.rounds,
                    "rows": [r.as_dict() for r in combined.values()],
                    "ratios": {k: round(v, 3) for k, v in ratios.items()},
                },
                indent=2,
            )
        )
        return 0
    print(
        f"LDAP sign-on, {args.workers} workers x {args.threads} threads, {args.rounds} rounds, load: {generator}"
    )
    print(f"{'row':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for result in combined.values():
        print(
            f"{result.label:<28}{result.rps:>10.1f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.errors:>8}"
        )
    print()
    print(
        f"Authenticate / floor search+bind: throughput x{ratios['authenticate_rps_vs_search_bind']:.2f}, "
        f"p50 x{ratios['authenticate_p50_vs_search_bind']:.2f}"
    )
    print(f"Authenticate / floor bind:        throughput x{ratios['authenticate_rps_vs_bind']:.2f}")
    print(f"GetSignInCookieInfo / floor search+bind: throughput x{ratios['cookie_rps_vs_search_bind']:.2f}")
    print(f"(repository {REPO.name}; both sides share this machine's CPUs with slapd and the load generator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
