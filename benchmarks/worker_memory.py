"""Memory of ``st-provider serve`` under load: each process, over time, beside a bare Spyne worker.

Usage::

    python benchmarks/worker_memory.py [--calls N] [--warmup N] [--workers N] [--threads N]
                                       [--connections N] [--samples N] [--no-baseline] [--json]

Starts, on a fresh SQLite database, the whole ``st-provider serve --workers N`` (the supervisor,
gunicorn's master, the SOAP web workers and the embedded delivery worker; default settings, so
the console is on) and, as the baseline, a bare Spyne application with the same contract under
gunicorn with the options ``serve`` uses (``soap_throughput.py --serve-bare``). Worker recycling
(``max_requests``) is turned off for ours with a gunicorn configuration file, so growth is
not hidden by a worker being replaced; the report checks the workers' pids did not change.

Each server gets ``--warmup`` calls (1,000), then ``--calls`` calls (100,000) of the
representative ``GetCustomFieldOptions`` (10 input variables, the call of
``soap_throughput.py``) over ``--connections`` keep-alive connections; every
``calls / --samples`` calls it reads, from ``/proc/PID/smaps_rollup``, each process's

* **RSS**: resident pages, shared ones included (what ``ps`` and most dashboards show);
* **PSS**: resident pages, each shared page divided among the processes sharing it (the
  processes' PSS add up to what the whole server really holds);
* **USS**: pages only this process holds (what stopping it would free).

It prints a table per server (process, after warm-up, at the end, growth, per 10,000 calls) and
the whole ``serve`` footprint (the sum of PSS, and of RSS). Issue 14's goal is measured by a web
worker's **RSS after warm-up** (at most 45 MB) and its growth over the calls (none).
Nothing is asserted; exit status 0 when measured, 2 when a server did not start or answered
wrongly. About two minutes with the defaults (the load generator is a threaded httpx client).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Only the standard library at the top: ``--serve-bare`` (the baseline's gunicorn) must import
# nothing but gunicorn and Spyne. The load side imports the rest in main().

GOAL_MB = 45.0
PASSWORD = "bench-web-service-password"  # soap_throughput.PASSWORD: a throwaway for a loopback run


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text.rpartition(")")[2].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + private dirty) of ``pid`` in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0])
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


@dataclass
class Process:
    """One process of a server, with its memory at each sample."""

    pid: int
    role: str
    samples: list[dict[str, int]] = field(default_factory=list)


def tree(root: int, roles: dict[str, str]) -> list[Process]:
    """``root`` and its descendants: a child of a gunicorn master is a web worker; any other
    process is named by the first ``roles`` key found in its command line."""
    found: list[Process] = []
    stack: list[tuple[int, str | None]] = [(root, None)]
    while stack:
        pid, parent_role = stack.pop(0)
        if parent_role == "gunicorn master":
            role = "web worker"
        else:
            cmd = command_line(pid)
            role = next((name for key, name in roles.items() if key in cmd), cmd[:40])
        found.append(Process(pid, role))
        stack.extend((child, role) for child in children(pid))
    return found


def send(endpoint: str, calls: int, connections: int) -> None:
    """``calls`` calls over ``connections`` keep-alive connections; raises on a wrong answer."""
    import httpx
    from soap_throughput import request_envelope, request_headers

    body, headers = request_envelope(), request_headers()

    def part(count: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            for _ in range(count):
                response = client.post(endpoint, content=body)
                if response.status_code != 200 or b"Success>true</" not in response.content:
                    raise RuntimeError(
                        f"unexpected answer {response.status_code}: {response.content[:300]!r}"
                    )

    share, rest = divmod(calls, connections)
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(part, [share + (1 if i < rest else 0) for i in range(connections)]))


def drive(endpoint: str, processes: list[Process], args: argparse.Namespace) -> float:
    """Warm up, then the calls in ``--samples`` parts, sampling memory after each; the seconds taken."""
    send(endpoint, args.warmup, args.connections)
    time.sleep(0.5)
    for process in processes:
        process.samples.append(memory_kb(process.pid))
    started = time.perf_counter()
    part = max(1, args.calls // args.samples)
    done = 0
    while done < args.calls:
        count = min(part, args.calls - done)
        send(endpoint, count, args.connections)
        done += count
        for process in processes:
            process.samples.append(memory_kb(process.pid))
    return time.perf_counter() - started


@contextlib.contextmanager
def ours(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, int]]:
    from _common import free_port, provider_env, running_server

    from provider.db.migrate import upgrade

    database_url = f"sqlite:///{tmp / 'ours.db'}"
    upgrade(database_url)
    config = tmp / "gunicorn.conf.py"
    config.write_text("max_requests = 0\nmax_requests_jitter = 0\n", encoding="utf-8")
    env = provider_env(PASSWORD, database_url, PYTHONUNBUFFERED="1")
    port = free_port()
    argv = [sys.executable, "-m", "provider.cli", "serve", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", str(args.workers), "--threads", str(args.threads), "--gunicorn-config", str(config)]
    url = f"http://127.0.0.1:{port}"
    with running_server(argv, health_url=f"{url}/healthz", log_path=tmp / "ours.log", env=env) as process:
        time.sleep(2.0)  # the embedded delivery worker starts beside the web server
        yield f"{url}/ExternalProvider.asmx", process.pid


@contextlib.contextmanager
def bare(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, int]]:
    from _common import free_port, running_server

    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", f"127.0.0.1:{port}"]
    argv += ["--workers", str(args.workers), "--threads", str(args.threads)]
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with running_server(argv, health_url=f"{base}/?wsdl", log_path=tmp / "bare.log", env=env) as process:
        yield f"{base}/", process.pid


def serve_bare(bind: str, workers: int, threads: int) -> int:
    """The baseline: a Spyne application with GetCustomFieldOptions' types answering a constant,
    under gunicorn's threaded worker with ``serve``'s workers and threads, importing nothing else."""
    from gunicorn.app.base import BaseApplication
    from spyne import Application, Array, Boolean, ComplexModel, ServiceBase, Unicode, rpc
    from spyne.protocol.soap import Soap11
    from spyne.server.wsgi import WsgiApplication

    namespace = "http://tempuri.org/"
    strings = Array(Unicode, type_name="ArrayOfString")

    class ExternalCustomFieldProviderInputs(ComplexModel):  # type: ignore[misc]
        __namespace__ = namespace
        _type_info = [("InputVariables", strings)]

    class ExternalCustomFieldProviderResult(ComplexModel):  # type: ignore[misc]
        __namespace__ = namespace
        _type_info = [("Success", Boolean(default=False)), ("Message", Unicode), ("OutputVariables", strings)]

    class BareService(ServiceBase):  # type: ignore[misc]
        @rpc(  # type: ignore[untyped-decorator]
            ExternalCustomFieldProviderInputs,
            _returns=ExternalCustomFieldProviderResult,
            _out_variable_name="GetCustomFieldOptionsResult",
        )
        def GetCustomFieldOptions(ctx: Any, inputs: Any) -> Any:
            return ExternalCustomFieldProviderResult(
                Success=True, Message="Result okay", OutputVariables=["CanStartTickets=True"]
            )

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": [bind], "workers": workers, "threads": threads}.items():
                self.cfg.set(key, value)
            self.cfg.set("worker_class", "gthread")

        def load(self) -> Any:
            app = Application(
                [BareService],
                tns=namespace,
                name="ExternalProvider",
                in_protocol=Soap11(),
                out_protocol=Soap11(),
            )
            return WsgiApplication(app)

    Bare().run()
    return 0


OUR_ROLES = {
    "serve --no-worker": "gunicorn master",
    "provider.cli worker": "delivery worker",
    "serve": "supervisor",
}
BARE_ROLES = {"--serve-bare": "gunicorn master"}


def measure(
    name: str, server: Any, roles: dict[str, str], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    with server(args, tmp) as (endpoint, pid):
        processes = tree(pid, roles)
        workers = {p.pid for p in processes if p.role == "web worker"}
        if len(workers) != args.workers:
            raise RuntimeError(f"expected {args.workers} web workers, found {sorted(workers)}")
        seconds = drive(endpoint, processes, args)
        replaced = workers - {p.pid for p in tree(pid, roles) if p.role == "web worker"}
    return {"server": name, "seconds": seconds, "processes": processes, "workers_replaced": sorted(replaced)}


def summary(result: dict[str, Any], calls: int) -> list[dict[str, Any]]:
    rows = []
    for process in result["processes"]:
        first, last = process.samples[0], process.samples[-1]
        rows.append(
            {
                "process": f"{process.role} ({process.pid})",
                "rss_mb": round(first["rss"] / 1024, 1),
                "pss_mb": round(first["pss"] / 1024, 1),
                "uss_mb": round(first["uss"] / 1024, 1),
                "rss_end_mb": round(last["rss"] / 1024, 1),
                "rss_growth_kb": last["rss"] - first["rss"],
                "uss_growth_kb": last["uss"] - first["uss"],
                "rss_kb_over_time": [s["rss"] for s in process.samples],
            }
        )
    return rows


def print_server(result: dict[str, Any], rows: list[dict[str, Any]], calls: int) -> None:
    print(f"\n{result['server']}: {calls} calls in {result['seconds']:.0f} s after warm-up")
    print(
        f"  {'process':<28} {'RSS MB':>7} {'PSS MB':>7} {'USS MB':>7} {'RSS end':>8} "
        f"{'RSS +kB':>8} {'USS +kB':>8}"
    )
    for row in rows:
        print(
            f"  {row['process']:<28} {row['rss_mb']:>7.1f} {row['pss_mb']:>7.1f} {row['uss_mb']:>7.1f} "
            f"{row['rss_end_mb']:>8.1f} {row['rss_growth_kb']:>8} {row['uss_growth_kb']:>8}"
        )
    for row in rows:
        if row["process"].startswith("web worker"):
            series = " ".join(f"{kb / 1024:.1f}" for kb in row["rss_kb_over_time"])
            print(
                f"  {row['process']} RSS MB after warm-up, then every {calls // (len(row['rss_kb_over_time']) - 1 or 1)} calls: {series}"
            )
    total_pss = sum(p.samples[-1]["pss"] for p in result["processes"]) / 1024
    total_rss = sum(p.samples[-1]["rss"] for p in result["processes"]) / 1024
    print(f"  whole server at the end: PSS {total_pss:.1f} MB (RSS summed {total_rss:.1f} MB)")
    if result["workers_replaced"]:
        print(f"  WARNING: web workers {result['workers_replaced']} were replaced during the run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare Spyne server")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-bare", metavar="BIND", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare, args.workers, args.threads)

    servers: list[tuple[str, Any, dict[str, str]]] = [("st-provider serve", ours, OUR_ROLES)]
    if not args.no_baseline:
        servers.append(("bare Spyne", bare, BARE_ROLES))
    report: dict[str, Any] = {"calls": args.calls, "goal_mb": GOAL_MB, "servers": []}
    with tempfile.TemporaryDirectory(prefix="st-worker-memory-") as directory:
        for name, server, roles in servers:
            try:
                result = measure(name, server, roles, args, Path(directory))
            except RuntimeError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 2
            rows = summary(result, args.calls)
            report["servers"].append(
                {
                    "server": name,
                    "seconds": round(result["seconds"], 1),
                    "processes": rows,
                    "pss_total_mb": round(sum(p.samples[-1]["pss"] for p in result["processes"]) / 1024, 1),
                    "rss_total_mb": round(sum(p.samples[-1]["rss"] for p in result["processes"]) / 1024, 1),
                    "workers_replaced": result["workers_replaced"],
                }
            )
            if not args.json:
                print_server(result, rows, args.calls)
    ours_rows = [r for r in report["servers"][0]["processes"] if r["process"].startswith("web worker")]
    worst = max(r["rss_mb"] for r in ours_rows)
    report["web_worker_rss_mb"] = worst
    report["within_goal"] = worst <= GOAL_MB
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verdict = "within" if report["within_goal"] else "NOT within"
        print(
            f"\nissue 14 goal: a SOAP web worker at most {GOAL_MB:.0f} MB RSS after warm-up -> {worst} MB, {verdict} it"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
