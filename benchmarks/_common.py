"""Shared helpers for the benchmarks: percentiles, server processes, a keep-alive load generator.

Every benchmark measures on loopback only, starts and stops its own processes (in their own
process group, stopped on every exit path), bounds its run time, and prints its numbers beside a
baseline measured in the same run. Nothing here asserts on speed: a benchmark reports, a reader
(or a CI job comparing ratios) judges.

Load generation uses ``wrk`` (keep-alive connections, a Lua script for the POST body, its own
latency histogram) when it is on ``PATH``, else a threaded ``httpx`` keep-alive client. The
fallback is limited by the GIL of the benchmark process; its numbers are lower bounds and the
report says which generator produced them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) of ``values``, linear interpolation between closest ranks.

    ``values`` need not be sorted. Raises ValueError for an empty sequence.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, not {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured. Latencies are in milliseconds."""

    label: str
    generator: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    notes: tuple[str, ...] = ()
    cpu_seconds: float | None = None  # CPU the server's processes used during the run, if probed

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_cpu_second(self) -> float | None:
        """Throughput per second of server CPU: barely moved by other work on the machine."""
        if self.cpu_seconds is None or self.cpu_seconds <= 0:
            return None
        return self.requests / self.cpu_seconds

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "generator": self.generator,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "requests_per_cpu_second": _round(self.requests_per_cpu_second),
            "notes": list(self.notes),
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def time_per_call(
    fn: Callable[[], object], *, seconds: float = 1.0, min_calls: int = 200
) -> tuple[float, int]:
    """Call ``fn()`` repeatedly for about ``seconds``; returns (mean seconds per call, calls).

    Runs a short warm-up first. Use the best of a few repetitions for a stable number.
    """
    for _ in range(min(50, min_calls)):
        fn()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        calls += 50
        now = time.perf_counter()
        if now >= deadline and calls >= min_calls:
            return (now - start) / calls, calls


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str,
    *,
    timeout: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait until GET ``url`` answers 200; raises RuntimeError (with the log tail) otherwise."""
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode} before {url} answered{_tail(log_path)}"
            )
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s ({last}){_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- server log (tail) ---\n" + "\n".join(text)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """SIGTERM the process group (gunicorn master and workers), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (Linux /proc).

    A server started by :func:`running_server` leads its own group, so this is the gunicorn
    master and its workers (threads included). Returns 0.0 where /proc is not available.
    """
    total = 0
    proc = Path("/proc")
    if not proc.is_dir():
        return 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is the state; pgrp is fields[2], utime and stime fields[11] and fields[12].
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    *,
    health_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 45.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group, wait for ``health_url``, stop it on exit."""
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(health_url, timeout=timeout, process=process, log_path=log_path)
        yield process
    finally:
        stop_process(process)


def provider_env(password: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment for an ``st-provider`` child process.

    This process's environment without any ``ST_PROVIDER_*`` variable, plus ``extra``, plus the
    Web Service Password and the database URL (these two win over a same-named ``extra``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_PROVIDER_")}
    env.update(extra)
    env.update(ST_PROVIDER_WEB_SERVICE_PASSWORD=password, ST_PROVIDER_DATABASE_URL=database_url)
    return env


def import_rules(env: Mapping[str, str], path: Path, *, replace: bool = False) -> None:
    """``st-provider rules import PATH`` (``--replace``) in a child process with ``env``;
    raises RuntimeError with its output if the import fails."""
    command = [sys.executable, "-m", "provider.cli", "rules", "import", str(path)]
    result = subprocess.run(
        [*command, "--replace"] if replace else command,
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rules import failed: {result.stdout}{result.stderr}")


@dataclass(frozen=True)
class ProviderServer:
    """A running ``st-provider serve`` on loopback (see :func:`provider_server`)."""

    url: str  # http://127.0.0.1:PORT, for /healthz and /metrics
    port: int
    pid: int  # it leads its own process group: pass it to process_group_cpu_seconds

    @property
    def endpoint(self) -> str:
        """The SOAP endpoint."""
        return f"{self.url}/ExternalProvider.asmx"


@contextlib.contextmanager
def provider_server(
    env: Mapping[str, str],
    log_path: Path,
    *,
    workers: int,
    threads: int | None = None,
    no_worker: bool,
) -> Iterator[ProviderServer]:
    """``st-provider serve`` (gunicorn) on a free loopback port, from its ``/healthz`` answering 200
    until the block exits (then stopped). ``threads`` None leaves gunicorn's threads at serve's default.

    Raises RuntimeError (with the log's tail) when the server does not come up.
    """
    port = free_port()
    argv = [sys.executable, "-m", "provider.cli", "serve", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", str(workers)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if no_worker:
        argv.append("--no-worker")
    url = f"http://127.0.0.1:{port}"
    with running_server(argv, health_url=f"{url}/healthz", log_path=log_path, env=env) as process:
        yield ProviderServer(url, port, process.pid)


# --- load generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One keep-alive POST load: the same request again and again."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    connections: int = 8
    threads: int = 2
    expect: bytes = b""  # a fragment the sample answer must contain (see check_answer)


def generator_name(force_httpx: bool = False) -> str:
    return "wrk" if shutil.which("wrk") and not force_httpx else "httpx-threads"


def measure_load(
    label: str,
    spec: LoadSpec,
    seconds: float,
    *,
    force_httpx: bool = False,
    server_pgid: int | None = None,
) -> LoadResult:
    """Load ``spec.url`` for ``seconds`` with wrk (or the httpx fallback); no checks, no warm-up.

    With ``server_pgid`` the result also carries the CPU seconds that process group used.
    """
    before = process_group_cpu_seconds(server_pgid) if server_pgid is not None else 0.0
    if generator_name(force_httpx) == "wrk":
        result = _run_wrk(label, spec, seconds)
    else:
        result = _run_httpx(label, spec, seconds)
    if server_pgid is None:
        return result
    used = process_group_cpu_seconds(server_pgid) - before
    return dataclasses.replace(result, cpu_seconds=used)


def run_load(
    label: str, spec: LoadSpec, *, duration: float, warmup: float = 2.0, force_httpx: bool = False
) -> LoadResult:
    """Check one request answers 200 with ``spec.expect``, warm up, then measure once.

    Raises RuntimeError when the sample request fails: a benchmark of error answers means nothing.
    """
    check_answer(spec)
    if warmup > 0:
        measure_load(label, spec, warmup, force_httpx=force_httpx)
    return measure_load(label, spec, duration, force_httpx=force_httpx)


def combine(label: str, rounds: Sequence[LoadResult]) -> LoadResult:
    """Several rounds of the same load as one result: summed counts, median latencies."""
    if not rounds:
        raise ValueError("no rounds to combine")
    return LoadResult(
        label=label,
        generator=rounds[0].generator,
        requests=sum(r.requests for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        errors=sum(r.errors for r in rounds),
        p50_ms=percentile([r.p50_ms for r in rounds], 50),
        p99_ms=percentile([r.p99_ms for r in rounds], 50),
        mean_ms=sum(r.mean_ms * r.requests for r in rounds) / max(1, sum(r.requests for r in rounds)),
        notes=tuple(dict.fromkeys(n for r in rounds for n in r.notes)),
        cpu_seconds=None
        if any(r.cpu_seconds is None for r in rounds)
        else sum(r.cpu_seconds or 0.0 for r in rounds),
    )


def check_answer(spec: LoadSpec) -> None:
    response = httpx.post(spec.url, content=spec.body, headers=dict(spec.headers), timeout=10.0)
    if response.status_code != 200 or spec.expect not in response.content:
        raise RuntimeError(
            f"sample request to {spec.url} answered {response.status_code}: {response.content[:600]!r}"
        )


#: The Lua ``done`` hook every wrk script here ends with: the report :func:`run_wrk` reads.
WRK_REPORT_LUA = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d status_errors=%d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status))
  io.write(string.format("BENCH p50_us=%d p99_us=%d mean_us=%.1f\\n",
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""

_LUA_TEMPLATE = (
    """-- generated by benchmarks/_common.py
wrk.method = "POST"
wrk.body = [{eq}[{body}]{eq}]
{headers}
"""
    + WRK_REPORT_LUA
)


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script that makes wrk POST ``spec.body`` with ``spec.headers`` and report as text."""
    body = spec.body.decode("utf-8")
    eq = "="
    while f"]{eq}]" in body:
        eq += "="
    return _LUA_TEMPLATE.format(eq=eq, body=body, headers=wrk_headers(spec.headers))


def wrk_headers(headers: Mapping[str, str]) -> str:
    """Lua lines setting ``headers`` on every request of a wrk script."""
    return "\n".join(
        f'wrk.headers["{_lua_escape(name)}"] = "{_lua_escape(value)}"' for name, value in headers.items()
    )


def _lua_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _run_wrk(label: str, spec: LoadSpec, seconds: float) -> LoadResult:
    threads = max(1, min(spec.threads, spec.connections))
    return run_wrk(
        label, wrk_script(spec), spec.url, threads=threads, connections=spec.connections, seconds=seconds
    )


def run_wrk(
    label: str, script: str, url: str, *, threads: int, connections: int, seconds: float
) -> LoadResult:
    """Run wrk with the Lua ``script`` against ``url`` for ``seconds`` and read its report.

    ``script`` must end with :data:`WRK_REPORT_LUA`. Raises RuntimeError when wrk fails or its
    report cannot be read.
    """
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script, encoding="utf-8")
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ]
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    values: dict[str, float] = {}
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH "):
            for key, value in re.findall(r"(\w+)=([0-9.]+)", line):
                values[key] = float(value)
    try:
        return LoadResult(
            label=label,
            generator="wrk",
            requests=int(values["requests"]),
            seconds=values["duration_us"] / 1e6,
            errors=int(values["errors"] + values["status_errors"]),
            p50_ms=values["p50_us"] / 1000.0,
            p99_ms=values["p99_us"] / 1000.0,
            mean_ms=values["mean_us"] / 1000.0,
        )
    except KeyError as exc:
        raise RuntimeError(f"could not read wrk's report ({exc}):\n{completed.stdout}") from exc


def _run_httpx(label: str, spec: LoadSpec, seconds: float) -> LoadResult:
    """A threaded keep-alive client: one httpx.Client (one connection) per simulated connection."""
    latencies: list[list[float]] = [[] for _ in range(spec.connections)]
    errors = [0] * spec.connections
    start_gate = threading.Barrier(spec.connections + 1)
    deadline_box: list[float] = [0.0]

    def worker(index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(timeout=10.0, limits=limits, headers=dict(spec.headers)) as client:
            start_gate.wait()
            own = latencies[index]
            while True:
                began = time.perf_counter()
                if began >= deadline_box[0]:
                    return
                try:
                    response = client.post(spec.url, content=spec.body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                own.append(time.perf_counter() - began)
                if not ok:
                    errors[index] += 1

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(spec.connections)]
    for thread in workers:
        thread.start()
    deadline_box[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start_gate.wait()
    for thread in workers:
        thread.join(timeout=seconds + 30)
    elapsed = time.perf_counter() - began
    return httpx_result(label, [value for own in latencies for value in own], sum(errors), elapsed)


def httpx_result(label: str, latencies: Sequence[float], errors: int, elapsed: float) -> LoadResult:
    """The result of a threaded httpx load: ``latencies`` in seconds, one per request.

    Raises RuntimeError when no request completed.
    """
    if not latencies:
        raise RuntimeError(f"{label}: the httpx load generator completed no request")
    return LoadResult(
        label=label,
        generator="httpx-threads",
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        p50_ms=percentile(latencies, 50) * 1000.0,
        p99_ms=percentile(latencies, 99) * 1000.0,
        mean_ms=sum(latencies) / len(latencies) * 1000.0,
        notes=("GIL-bound client: throughput is a lower bound",),
    )


# --- reporting ----------------------------------------------------------------------------------


def format_table(rows: Sequence[LoadResult]) -> str:
    """A fixed-width table of load results (``req/CPU-s`` when the server CPU was probed)."""
    header = (
        f"{'target':<22}{'requests':>9}{'req/s':>9}{'req/CPU-s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        per_cpu = row.requests_per_cpu_second
        cpu = f"{per_cpu:>11.1f}" if per_cpu is not None else f"{'-':>11}"
        lines.append(
            f"{row.label:<22}{row.requests:>9d}{row.rps:>9.1f}{cpu}"
            f"{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}{row.errors:>8d}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """``measured`` beside its ``baseline``, the two loaded in the same alternating rounds."""

    measured: LoadResult
    baseline: LoadResult
    round_ratios: tuple[float, ...]  # requests/s of measured / baseline, one per round

    @classmethod
    def from_rounds(cls, measured: Sequence[LoadResult], baseline: Sequence[LoadResult]) -> Comparison:
        """Each side's rounds combined (under its first round's label), and the ratio of each round."""
        ratios = tuple(m.rps / b.rps if b.rps else 0.0 for m, b in zip(measured, baseline, strict=True))
        return cls(combine(measured[0].label, measured), combine(baseline[0].label, baseline), ratios)

    @property
    def ratio(self) -> float:
        """The headline: the median of the per-round ratios.

        One round disturbed by something else on the machine moves it less than it moves the totals.
        """
        return percentile(self.round_ratios, 50)

    @property
    def ratio_of_totals(self) -> float:
        return self.measured.rps / self.baseline.rps if self.baseline.rps else 0.0

    @property
    def ratio_per_cpu_second(self) -> float | None:
        """The ratio of requests per server CPU-second; None when the server CPU was not probed."""
        measured, baseline = self.measured.requests_per_cpu_second, self.baseline.requests_per_cpu_second
        return measured / baseline if measured and baseline else None

    def as_dict(self, headline: str) -> dict[str, object]:
        """The ratios for a JSON report, the headline :attr:`ratio` under the key ``headline``."""
        per_cpu = self.ratio_per_cpu_second
        return {
            "round_ratios": [round(r, 3) for r in self.round_ratios],
            headline: round(self.ratio, 3),
            "ratio_of_totals": round(self.ratio_of_totals, 3),
            "ratio_per_server_cpu_second": None if per_cpu is None else round(per_cpu, 3),
        }

    def rounds_line(self) -> str:
        """The line under the headline: each round's ratio and the ratio of the totals."""
        return (
            f"  median of the per-round ratios {', '.join(f'{r:.2f}' for r in self.round_ratios)}; "
            f"ratio of the totals {self.ratio_of_totals:.2f}"
        )


def print_notes(rows: Sequence[LoadResult]) -> None:
    """Print each row's notes (which load generator caveat applies to it)."""
    for row in rows:
        for note in row.notes:
            print(f"note ({row.label}): {note}")


def warn_on_errors(rows: Sequence[LoadResult]) -> None:
    """Warn on stderr when any request of ``rows`` failed."""
    if any(row.errors for row in rows):
        print("warning: some requests failed during the load; see the errors column", file=sys.stderr)
