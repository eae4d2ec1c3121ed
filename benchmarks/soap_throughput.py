"""SOAP throughput: st-provider under gunicorn against a bare Spyne baseline and raw lxml.

Usage::

    python benchmarks/soap_throughput.py [--duration S] [--workers N] [--threads N] [--rounds N]
                                         [--connections N] [--warmup S] [--json] [--httpx] [--strict]
                                         [--journal] [--rules] [--bare-sync] [--spyne-path]

Measures requests per second and p50/p99 latency for a representative call
(``GetCustomFieldOptions`` with 10 input variables, SOAP 1.1, keep-alive connections) against

1. **ours**: ``st-provider serve`` (gunicorn, the configured workers and threads) on a fresh
   SQLite database, default settings;
2. **bare Spyne**: a minimal Spyne application with the same types and a constant answer, served
   by gunicorn with exactly the options ``serve`` uses (:func:`provider.server.gunicorn_options`);

both up at once and loaded in alternating rounds, so a change in the machine's load during the run
hits both. It prints the ratio ours / bare Spyne (the median of the per-round ratios; goal: at
least 0.7) and, measured in this
process on one core without HTTP, the cost per call of each stack and of **raw lxml** (parse the
same envelope, build the same answer and serialise it by hand): the floor any Python SOAP stack
pays. Everything is on loopback; with the defaults the run takes about a minute.

Issue 14 goal 2 (``--rules --bare-sync``): ours with 21 rules loaded (the set of
``benchmarks/soap_operations.py``) against bare Spyne under **gunicorn's defaults** (sync
workers, the same worker count, nothing else set); goal: at least 1.3, p99 no worse.
``--spyne-path`` runs ours with ``ST_PROVIDER_SOAP_FAST_PATH=off``: the figures before the fast path.

``--journal`` measures the cost of the call journal instead: ours with ``ST_PROVIDER_JOURNAL=on``
against ours with it off (each on its own SQLite database, loaded in the same alternating rounds);
goal: at least 0.9 (journal on keeps 90% of the throughput).

Exit status: 0 when measured (whatever the ratio; ``--strict`` exits 1 below the goal), 2 when a
server did not start or answered the sample request wrongly. The bare baseline's server runs in a
child process started as ``soap_throughput.py --serve-bare HOST:PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from gunicorn.app.base import BaseApplication
from lxml import etree
from spyne import Application, Array, Boolean, ComplexModel, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from provider.app import build_application
from provider.db.migrate import upgrade
from provider.server import gunicorn_options
from provider.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the benchmarks directory is not a package
    REPO,
    Comparison,
    LoadResult,
    LoadSpec,
    check_answer,
    format_table,
    free_port,
    generator_name,
    measure_load,
    print_notes,
    provider_env,
    provider_server,
    running_server,
    time_per_call,
    warn_on_errors,
)
from soap_operations import import_rule_set  # the 21 rules (the benchmarks directory is not a package)

NAMESPACE = "http://tempuri.org/"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OPERATION = "GetCustomFieldOptions"
PASSWORD = "bench-web-service-password"  # a throwaway password for a loopback run
GOAL = 0.7
BARE_SYNC_GOAL = 1.3  # issue 14 goal 2: against bare Spyne under gunicorn's default sync workers
JOURNAL_GOAL = 0.9
OURS = "ours (st-provider)"
BARE = "bare Spyne"
JOURNAL_ON = "journal on"
JOURNAL_OFF = "journal off"

# The representative call: what SmarterTrack sends on the second ticket page.
INPUT_VARIABLES = (
    f"authPW={PASSWORD}",
    "loginUsername=jdoe",
    "departmentName=Support Department",
    "location=REGULAR",
    "brandName=Example Hosting",
    "cf_Ticket Type=Phone Ticket",
    "cf_Account=abc.com",
    "cf_Priority=High",
    "cf_Product=Mail & Web <Pro> = \u00e9t\u00e9",
    "cf_Region=EMEA",
)


def request_envelope(variables: tuple[str, ...] = INPUT_VARIABLES, namespace: str = NAMESPACE) -> bytes:
    """The SOAP 1.1 request exactly as .NET's XmlSerializer writes it for SmarterTrack."""
    strings = "".join(f"<string>{escape(v)}</string>" for v in variables)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP11_ENV}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f'<soap:Body><{OPERATION} xmlns="{namespace}"><inputs><InputVariables>{strings}'
        f"</InputVariables></inputs></{OPERATION}></soap:Body></soap:Envelope>"
    ).encode()


def request_headers(namespace: str = NAMESPACE) -> dict[str, str]:
    return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{namespace}{OPERATION}"'}


# --- (b) raw lxml: parse + build + serialise, in process ------------------------------------------

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False
)


def lxml_round_trip(body: bytes, namespace: str = NAMESPACE) -> bytes:
    """Parse the envelope, read the variables, build and serialise the constant answer by hand."""
    root = etree.fromstring(body, _PARSER)
    operation = root.find(f"{{{SOAP11_ENV}}}Body")[0]
    variables: dict[str, str] = {}
    for element in operation.iter(f"{{{namespace}}}string"):
        name, sep, value = (element.text or "").partition("=")
        if sep:
            variables[name.strip().lower()] = value
    if "authpw" not in variables:
        raise ValueError("the benchmark envelope lost its variables")
    envelope = etree.Element(f"{{{SOAP11_ENV}}}Envelope", nsmap={"soap": SOAP11_ENV})
    body_element = etree.SubElement(envelope, f"{{{SOAP11_ENV}}}Body")
    response = etree.SubElement(body_element, f"{{{namespace}}}{OPERATION}Response", nsmap={None: namespace})
    result = etree.SubElement(response, f"{{{namespace}}}{OPERATION}Result")
    etree.SubElement(result, f"{{{namespace}}}Success").text = "true"
    etree.SubElement(result, f"{{{namespace}}}Message").text = "Result okay"
    etree.SubElement(result, f"{{{namespace}}}CustomFieldDataItems")
    outputs = etree.SubElement(result, f"{{{namespace}}}OutputVariables")
    for entry in ("CanStartTickets=True", "CanStartChats=True"):
        etree.SubElement(outputs, f"{{{namespace}}}string").text = entry
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


# --- (a) bare Spyne: same types, constant answer --------------------------------------------------


def bare_spyne_application(namespace: str = NAMESPACE, validator: str | None = None) -> Any:
    """A minimal Spyne Application with the contract's GetCustomFieldOptions types.

    No codec, no domain, no router: the floor a Spyne-based provider cannot go below. Spyne's
    protocols are used as configured by default (no schema validation, like ours, which
    parses and checks the envelope itself); the answer is a constant ``Success=true`` with the
    two default output variables.
    """
    array_of_string = Array(Unicode, type_name="ArrayOfString")

    class ExternalCustomFieldProviderInputs(ComplexModel):  # type: ignore[misc]
        __namespace__ = namespace
        _type_info = [("InputVariables", array_of_string)]

    class ExternalCustomFieldData(ComplexModel):  # type: ignore[misc]
        __namespace__ = namespace
        _type_info = [
            ("CustomFieldName", Unicode),
            ("DisplayWithInformationLookup", Boolean(default=False)),
            ("ChangeListOptions", Boolean(default=False)),
            ("ListOptions", array_of_string),
            ("ChangeRequired", Boolean(default=False)),
            ("NewRequiredValue", Boolean(default=False)),
            ("ChangeVisible", Boolean(default=False)),
            ("NewVisibleValue", Boolean(default=False)),
        ]

    class ExternalCustomFieldProviderResult(ComplexModel):  # type: ignore[misc]
        __namespace__ = namespace
        _type_info = [
            ("Success", Boolean(default=False)),
            ("Message", Unicode),
            (
                "CustomFieldDataItems",
                Array(ExternalCustomFieldData, type_name="ArrayOfExternalCustomFieldData"),
            ),
            ("OutputVariables", array_of_string),
        ]

    class BareService(ServiceBase):  # type: ignore[misc]
        @rpc(  # type: ignore[untyped-decorator]
            ExternalCustomFieldProviderInputs,
            _returns=ExternalCustomFieldProviderResult,
            _out_variable_name=f"{OPERATION}Result",
        )
        def GetCustomFieldOptions(ctx: Any, inputs: Any) -> Any:
            variables = inputs.InputVariables if inputs is not None else None
            if not variables:
                return ExternalCustomFieldProviderResult(Success=False, Message="Permission Denied")
            return ExternalCustomFieldProviderResult(
                Success=True,
                Message="Result okay",
                CustomFieldDataItems=[],
                OutputVariables=["CanStartTickets=True", "CanStartChats=True"],
            )

    return Application(
        [BareService],
        tns=namespace,
        name="ExternalProvider",
        in_protocol=Soap11(validator=validator),
        out_protocol=Soap11(),
    )


def bare_wsgi_application() -> Any:
    """The bare baseline as a WSGI application (built in each gunicorn worker)."""
    logging.getLogger("spyne").setLevel(logging.WARNING)
    return WsgiApplication(bare_spyne_application())


# --- in process: the same call through each stack, no HTTP -----------------------------------------


def _wsgi_caller(app: Any, body: bytes, path: str) -> Callable[[], bytes]:
    """A zero-argument function posting ``body`` to the WSGI ``app`` and returning the answer."""
    headers = request_headers()

    def call() -> bytes:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_TYPE": headers["Content-Type"],
            "HTTP_SOAPACTION": headers["SOAPAction"],
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
        }
        statuses: list[str] = []
        answer = b"".join(app(environ, lambda status, _headers: statuses.append(status)))
        if not statuses or not statuses[0].startswith("200") or b"CanStartTickets=True" not in answer:
            raise RuntimeError(f"in-process call answered {statuses}: {answer[:300]!r}")
        return answer

    return call


def measure_in_process(tmp: Path, seconds: float) -> dict[str, float]:
    """Microseconds per call, best of three, for each stack in this process (one core, no HTTP).

    ``ours`` is :func:`provider.app.build_application` on its own fresh SQLite database with the
    same settings as the server (logging not configured: no log line is written).
    ``ours, no loginUsername`` sends the same envelope without ``loginUsername``, so the
    directory lookup the domain makes for it is skipped: the difference is the domain's share.
    """
    # Both stacks register Spyne applications under the same (namespace, name) in this process.
    logging.getLogger("spyne.util.appreg").setLevel(logging.ERROR)
    database_url = f"sqlite:///{tmp / 'inprocess.db'}"
    upgrade(database_url)
    settings = Settings.from_mapping(
        {"web_service_password": PASSWORD, "database_url": database_url}, environment={}
    )
    ours = build_application(settings)
    bare = bare_wsgi_application()
    body = request_envelope()
    anonymous = request_envelope(tuple(v for v in INPUT_VARIABLES if not v.startswith("loginUsername=")))
    lxml_body = request_envelope()
    stacks: dict[str, Callable[[], object]] = {
        "bare Spyne": _wsgi_caller(bare, body, "/"),
        "ours": _wsgi_caller(ours, body, "/ExternalProvider.asmx"),
        "ours, no loginUsername": _wsgi_caller(ours, anonymous, "/ExternalProvider.asmx"),
        "raw lxml": lambda: lxml_round_trip(lxml_body),
    }
    if b"CanStartTickets=True" not in lxml_round_trip(lxml_body):
        raise RuntimeError("the lxml round trip built a wrong answer")
    best = dict.fromkeys(stacks, float("inf"))
    try:
        # Interleaved repetitions, best of three: a burst of other work hits every stack alike.
        for _ in range(3):
            for label, fn in stacks.items():
                best[label] = min(best[label], time_per_call(fn, seconds=seconds / 3)[0] * 1e6)
        return best
    finally:
        if ours.database is not None:
            ours.database.dispose()


# --- the servers ----------------------------------------------------------------------------------


class _BareServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running the bare Spyne baseline with the options ``st-provider serve`` uses."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return bare_wsgi_application()


def serve_bare(bind: str, workers: int, threads: int, *, sync: bool = False) -> int:
    """Serve the bare baseline until SIGTERM, with :func:`provider.server.gunicorn_options`.

    The same worker class, workers, threads, keep-alive, timeouts and limits as ours: only
    the application differs. (The Prometheus ``child_exit`` hook is dropped: no metrics here.)
    With ``sync``, gunicorn's defaults instead (sync workers), with only the bind and the
    worker count set.
    """
    settings = Settings.from_mapping({"web_service_password": PASSWORD}, environment={})
    options = gunicorn_options(settings, bind=bind, workers=workers, threads=threads)
    if sync:
        options = {"bind": [bind], "workers": workers, "control_socket_disable": True, "errorlog": "-"}
    options.pop("child_exit", None)
    options["proc_name"] = "bare-spyne"
    _BareServer(options).run()
    return 0


@contextlib.contextmanager
def ours_server(
    args: argparse.Namespace, tmp: Path, *, name: str = "server", journal: bool = True
) -> Iterator[tuple[str, int]]:
    """``st-provider serve`` on a fresh SQLite database; yields (SOAP endpoint URL, process group)."""
    database_url = f"sqlite:///{tmp / f'{name}.db'}"
    upgrade(database_url)
    if getattr(args, "rules", False):
        import_rule_set(database_url)
    env = provider_env(
        PASSWORD,
        database_url,
        PYTHONUNBUFFERED="1",
        ST_PROVIDER_JOURNAL="on" if journal else "off",
        ST_PROVIDER_SOAP_FAST_PATH="off" if getattr(args, "spyne_path", False) else "on",
    )
    with provider_server(
        env, tmp / f"{name}.log", workers=args.workers, threads=args.threads, no_worker=args.no_worker
    ) as server:
        yield server.endpoint, server.pid


@contextlib.contextmanager
def bare_server(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, int]]:
    """The bare Spyne baseline under gunicorn; yields (SOAP endpoint URL, process group)."""
    port = free_port()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-bare",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        *(["--bare-sync"] if args.bare_sync else []),
    ]
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with running_server(argv, health_url=f"{base}/?wsdl", log_path=tmp / "bare.log", env=env) as process:
        yield f"{base}/", process.pid


def measure_servers(args: argparse.Namespace, tmp: Path) -> Comparison:
    """Both servers up at once, loaded in alternating rounds so drifting machine load hits both.

    Returns ours measured against bare Spyne.
    """
    with ours_server(args, tmp) as (ours_url, ours_pgid), bare_server(args, tmp) as (bare_url, bare_pgid):
        specs = {OURS: _spec(args, ours_url), BARE: _spec(args, bare_url)}
        groups = {OURS: ours_pgid, BARE: bare_pgid}
        return _alternate(args, specs, groups, OURS, BARE)


def measure_journal(args: argparse.Namespace, tmp: Path) -> Comparison:
    """Ours with the call journal on against ours with it off, in alternating rounds."""
    with (
        ours_server(args, tmp, name="journal-on", journal=True) as (on_url, on_pgid),
        ours_server(args, tmp, name="journal-off", journal=False) as (off_url, off_pgid),
    ):
        specs = {JOURNAL_ON: _spec(args, on_url), JOURNAL_OFF: _spec(args, off_url)}
        groups = {JOURNAL_ON: on_pgid, JOURNAL_OFF: off_pgid}
        return _alternate(args, specs, groups, JOURNAL_ON, JOURNAL_OFF)


def _alternate(
    args: argparse.Namespace, specs: dict[str, LoadSpec], groups: dict[str, int], measured: str, baseline: str
) -> Comparison:
    """Warm both up, then load them in alternating rounds; ``measured`` against ``baseline``."""
    for label, spec in specs.items():
        check_answer(spec)
        if args.warmup > 0:
            measure_load(label, spec, args.warmup, force_httpx=args.httpx)
    rounds: dict[str, list[LoadResult]] = {measured: [], baseline: []}
    per_round = max(1.0, args.duration / args.rounds)
    for index in range(args.rounds):
        order = (measured, baseline) if index % 2 == 0 else (baseline, measured)
        for label in order:
            rounds[label].append(
                measure_load(
                    label, specs[label], per_round, force_httpx=args.httpx, server_pgid=groups[label]
                )
            )
    return Comparison.from_rounds(rounds[measured], rounds[baseline])


def _spec(args: argparse.Namespace, url: str) -> LoadSpec:
    return LoadSpec(
        url=url,
        body=request_envelope(),
        headers=request_headers(),
        connections=args.connections or args.workers * args.threads,
        threads=2,
        expect=b"CanStartTickets=" if args.rules else b"CanStartTickets=True",
    )


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per server (15)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds the duration is split in (5)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server (2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for both servers (2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (4)")
    parser.add_argument("--connections", type=int, default=0, help="keep-alive connections (workers*threads)")
    parser.add_argument("--httpx", action="store_true", help="use the httpx client even when wrk is present")
    parser.add_argument("--no-worker", action="store_true", help="pass --no-worker to st-provider serve")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when ours / bare Spyne < {GOAL}")
    parser.add_argument(
        "--journal", action="store_true", help=f"journal on vs off instead (goal: at least {JOURNAL_GOAL})"
    )
    parser.add_argument(
        "--rules", action="store_true", help="load the 21 rules of soap_operations.py into ours"
    )
    parser.add_argument(
        "--bare-sync",
        action="store_true",
        help=f"bare Spyne under gunicorn's defaults (sync workers); goal: at least {BARE_SYNC_GOAL}",
    )
    parser.add_argument(
        "--spyne-path", action="store_true", help="ours with ST_PROVIDER_SOAP_FAST_PATH=off (the path before)"
    )
    parser.add_argument("--serve-bare", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.workers < 1 or args.threads < 1 or args.rounds < 1:
        parser.error("--duration, --rounds, --workers and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare, args.workers, args.threads, sync=args.bare_sync)
    if args.journal:
        return journal_main(args)
    with tempfile.TemporaryDirectory(prefix="bench-soap-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            in_process = measure_in_process(tmp, seconds=min(3.0, max(1.0, args.duration / 10)))
            comparison = measure_servers(args, tmp)
        except RuntimeError as exc:
            print(f"soap_throughput: {exc}", file=sys.stderr)
            return 2
    ours, bare = comparison.measured, comparison.baseline
    ratio, cpu_ratio = comparison.ratio, comparison.ratio_per_cpu_second
    goal = BARE_SYNC_GOAL if args.bare_sync else GOAL
    connections = args.connections or args.workers * args.threads
    if args.json:
        report = {
            "operation": OPERATION,
            "input_variables": len(INPUT_VARIABLES),
            "workers": args.workers,
            "threads": args.threads,
            "connections": connections,
            "results": [ours.as_dict(), bare.as_dict()],
            "in_process_us_per_call": {k: round(v, 1) for k, v in in_process.items()},
            **comparison.as_dict("ratio_ours_to_bare_spyne"),
            "goal": goal,
            "rules": 21 if args.rules else 0,
            "bare_worker": "sync (gunicorn defaults)" if args.bare_sync else "as ours",
        }
        print(json.dumps(report, indent=2))
    else:
        print(
            f"SOAP throughput: {OPERATION} with {len(INPUT_VARIABLES)} input variables, SOAP 1.1, "
            f"gunicorn gthread {args.workers} workers x {args.threads} threads, {connections} keep-alive "
            f"connections, {args.duration:g} s per server in {args.rounds} alternating rounds "
            f"({generator_name(args.httpx)}), {os.cpu_count()} CPUs"
        )
        print(format_table([ours, bare]))
        if args.rules or args.bare_sync:
            print(
                f"ours with {21 if args.rules else 0} rules; bare Spyne "
                + ("under gunicorn's defaults (sync workers)" if args.bare_sync else "with ours' options")
            )
        verdict = "meets" if ratio >= goal else "BELOW"
        print(f"ratio ours / bare Spyne: {ratio:.2f} ({verdict} the goal of {goal})")
        print(comparison.rounds_line())
        if cpu_ratio is not None:
            print(f"  per server CPU-second (requests / CPU the server processes used): {cpu_ratio:.2f}")
            if abs(cpu_ratio - ratio) > 0.2 * max(cpu_ratio, ratio):
                print(
                    "  the two disagree: other work on the machine disturbed the rounds; the "
                    "per-CPU ratio is the steadier one"
                )
        print("in process, one core, no HTTP (best of 3):")
        for label, micros in in_process.items():
            print(f"  {label:<24}{micros:>9.1f} us per call  ({1e6 / micros:>8,.0f} calls/s)")
        print_notes([ours, bare])
    warn_on_errors([ours, bare])
    return 1 if args.strict and ratio < goal else 0


def journal_main(args: argparse.Namespace) -> int:
    """``--journal``: the throughput with the call journal on / off (goal: at least 0.9)."""
    with tempfile.TemporaryDirectory(prefix="bench-soap-") as tmp_name:
        try:
            comparison = measure_journal(args, Path(tmp_name))
        except RuntimeError as exc:
            print(f"soap_throughput: {exc}", file=sys.stderr)
            return 2
    on, off = comparison.measured, comparison.baseline
    ratio = comparison.ratio
    if args.json:
        report = {
            "operation": OPERATION,
            "workers": args.workers,
            "threads": args.threads,
            "results": [on.as_dict(), off.as_dict()],
            **comparison.as_dict("ratio_journal_on_to_off"),
            "goal": JOURNAL_GOAL,
        }
        print(json.dumps(report, indent=2))
    else:
        print(
            f"Call journal cost: {OPERATION}, gunicorn gthread {args.workers} workers x {args.threads} "
            f"threads, {args.duration:g} s per server in {args.rounds} alternating rounds "
            f"({generator_name(args.httpx)}), {os.cpu_count()} CPUs"
        )
        print(format_table([on, off]))
        verdict = "meets" if ratio >= JOURNAL_GOAL else "BELOW"
        print(f"ratio journal on / off: {ratio:.2f} ({verdict} the goal of {JOURNAL_GOAL})")
        print(comparison.rounds_line())
        if comparison.ratio_per_cpu_second is not None:
            print(f"  per server CPU-second: {comparison.ratio_per_cpu_second:.2f}")
        print_notes([on, off])
    warn_on_errors([on, off])
    return 1 if args.strict and ratio < JOURNAL_GOAL else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
