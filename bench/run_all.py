"""`make bench`: every benchmark, one after another, against PostgreSQL and Redis with the
sandbox provider on loopback; a table of each figure against its target; and the
generated section of docs/benchmarks.md rewritten.

    .venv/bin/python bench/run_all.py [--soak 600] [--only NAME,...] [--no-doc]

Each benchmark runs as a subprocess with its exact command line (printed, and written to
the doc), its own database (DATABASE_URL's server, the name DATABASE_URL's name + "_" +
the benchmark's) and a time limit; its output is shown as it comes and kept. Its RESULT
lines (bench/results.py) make the table. The load average before and after each is
printed: a machine shared with other work inflates every figure that is a time.

Defaults: DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench and
CELERY_BROKER_URL=redis://127.0.0.1:6379/12; set either to use another server or Redis
database. The schema is migrated once, into DATABASE_URL's name + "_template", which the
benchmarks copy (bench/databases.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from databases import TEMPLATE_VARIABLE
from results import Result, results_parse

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- make bench: begin -->"
END = "<!-- make bench: end -->"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/roster_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
# A fixed test key: the benchmarks' credentials are the sandbox's, never a real secret.
BENCH_FERNET_KEY = "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs="


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...]
    timeout: float  # seconds
    database: str = ""  # suffix of its database's name; "" for none
    issue: str = ""  # where its targets are set


@dataclass
class Run:
    benchmark: Benchmark
    command: str
    output: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""
    exit_code: int | None = None
    timed_out: bool = False

    @property
    def results(self) -> list[Result]:
        return results_parse("\n".join(self.output))


def benchmarks(soak: float) -> list[Benchmark]:
    """The benchmarks, in the order they run (the sandbox's capacity first, so the
    others' load on it can be set beside it; the long soak last)."""
    return [
        Benchmark("sandbox", "bench/sandbox_capacity.py", ("--duration", "5"), 90, "",
                  "issue 2"),
        Benchmark("settle", "bench/settle_bench.py",
                  ("--calls", "4000", "--timed-checks", "2000"), 420, "settle", "issue 3"),
        # --reuse: the 10M-row month is kept between runs while the generator, the schema
        # and the sizes are unchanged (its fill takes minutes and is not the benchmark).
        Benchmark("report", "bench/report_bench.py",
                  ("--sizes", "10000000", "--runs", "10", "--reuse"), 900, "report", "issue 3"),
        Benchmark("workload", "bench/office_workload.py", (), 300, "workload", "issue 4"),
        Benchmark("proxy", "bench/proxy_overhead.py",
                  ("--requests", "10", "--requests-64", "640"), 300, "proxy", "issue 5"),
        Benchmark("task_path", "bench/task_path.py", ("--solo-tasks", "30", "--busy-tasks", "300"),
                  420, "task_path", "issue 6"),
        Benchmark("soak", "bench/throughput_soak.py", ("--soak", f"{soak:g}"), soak + 420,
                  "soak", "issue 6"),
    ]  # fmt: skip


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def database_url(base: str, suffix: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path}_{suffix}"))


def bench_env(base_url: str, broker_url: str, template: str) -> dict[str, str]:
    """What every benchmark runs with, besides its own DATABASE_URL."""
    return {
        "CELERY_BROKER_URL": broker_url,
        TEMPLATE_VARIABLE: template,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or "bench",
        "ROSTER_FERNET_KEYS": os.environ.get("ROSTER_FERNET_KEYS") or BENCH_FERNET_KEY,
        "PYTHONUNBUFFERED": "1",
    }


def command_line(env: dict[str, str], args: list[str]) -> str:
    """The command as one could type it (the interpreter relative to the project)."""
    shown = {k: env[k] for k in ("DATABASE_URL", "CELERY_BROKER_URL", TEMPLATE_VARIABLE)
             if k in env}  # fmt: skip
    python = (
        os.path.relpath(sys.executable, ROOT)
        if sys.executable.startswith(str(ROOT))
        else (sys.executable)
    )
    return " ".join([*(f"{k}={v}" for k, v in shown.items()), python, *args])


def run(command: list[str], env: dict[str, str], *, timeout: float, into: Run) -> None:
    """Run a benchmark in a process group of its own, echoing and keeping its output;
    on timeout (or Ctrl-C) stop the whole group, the office's processes included."""
    into.load_before = loadavg()
    print(f"\n=== {into.benchmark.name}: {into.command}", flush=True)
    print(f"    load average {into.load_before}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            into.output.append(line.rstrip("\n"))
            print(f"    {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        into.timed_out = True
        group_stop(proc)
    except KeyboardInterrupt:
        group_stop(proc)
        raise
    reader.join(timeout=10)
    into.exit_code = proc.returncode
    into.seconds = time.monotonic() - started
    into.load_after = loadavg()
    state = "timed out" if into.timed_out else f"exit {into.exit_code}"
    print(
        f"    {into.benchmark.name}: {state} after {into.seconds:.0f} s; load average "
        f"{into.load_after}",
        flush=True,
    )


def group_stop(proc: subprocess.Popen[str]) -> None:
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def template_migrate(url: str, env: dict[str, str]) -> float:
    """Drop and create the template database, migrate it. Returns the seconds taken."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    started = time.monotonic()
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env, "DATABASE_URL": url},
        check=True,
    )
    return time.monotonic() - started


# --- The machine and the versions --------------------------------------------------------------


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    gib = int(memory.group(1)) / 1024 / 1024 if memory else 0
    return (
        f"{os.cpu_count()} cores ({model.group(1).strip() if model else 'unknown CPU'}), "
        f"{gib:.1f} GiB of memory, Linux {platform.release()}"
    )


def versions(database: str, broker: str) -> str:
    found = [f"Python {platform.python_version()}"]
    for package, label in (
        ("django", "Django"),
        ("celery", "Celery"),
        ("kombu", "kombu"),
        ("httpx", "httpx"),
        ("psycopg", "psycopg"),
        ("gunicorn", "gunicorn"),
        ("redis", "redis-py"),
    ):
        try:
            found.append(f"{label} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{label} (not installed)")
    try:
        import psycopg

        parts = urlsplit(database)
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres"))) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found.append(f"PostgreSQL {row[0].split()[0] if row else '?'}")
    except Exception as exc:  # the table says so rather than the run failing here
        found.append(f"PostgreSQL (unreachable: {exc})")
    try:
        import redis

        found.append(f"Redis {redis.Redis.from_url(broker).info('server')['redis_version']}")
    except Exception as exc:
        found.append(f"Redis (unreachable: {exc})")
    try:
        out = subprocess.run(
            ["pgbouncer", "--version"], capture_output=True, text=True, check=False
        ).stdout
        found.append(out.splitlines()[0] if out else "PgBouncer (no version)")
    except OSError:
        found.append("PgBouncer (not installed)")
    return ", ".join(found)


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}{' with uncommitted changes' if dirty else ''}"


# --- The table and the doc ----------------------------------------------------------------------


def rows(runs: list[Run]) -> list[tuple[str, Result]]:
    """(benchmark name, result) for the table; a benchmark that printed no result is a
    FAIL row that says why."""
    table = []
    for item in runs:
        found = item.results
        if item.timed_out or item.exit_code != 0 or not found:
            why = (
                f"timed out after {item.seconds:.0f} s"
                if item.timed_out
                else f"exit {item.exit_code}"
                if item.exit_code
                else "printed no RESULT line"
            )
            found = [
                *found,
                Result(
                    benchmark=f"{item.benchmark.script} did not finish",
                    target="runs to the end",
                    figure=why,
                    verdict="FAIL",
                ),
            ]
        table += [(item.benchmark.name, result) for result in found]
    return table


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_print(runs: list[Run], total: float) -> None:
    print("\n" + "=" * 100)
    for name, result in rows(runs):
        print(f"{result['verdict']:<5} {name:<10} {result['benchmark']}")
        print(f"      target {result['target']}; figure {result['figure']}")
        if result.get("note"):
            print(f"      note: {result['note']}")
    print("-" * 100)
    for item in runs:
        print(
            f"{item.benchmark.name:<10} {item.seconds:6.0f} s   load average "
            f"{item.load_before} -> {item.load_after}"
        )
    print(f"{'total':<10} {total:6.0f} s ({total / 60:.1f} min)")


def sandbox_capacity(runs: list[Run]) -> float | None:
    for item in runs:
        if item.benchmark.name == "sandbox":
            for result in item.results:
                if "sandbox_rps" in result:
                    return float(result["sandbox_rps"])
    return None


def section(
    runs: list[Run], *, started: datetime, total: float, template_seconds: float, about: dict
) -> str:
    lines = [
        BEGIN,
        "<!-- Written by bench/run_all.py (`make bench`): edits between these markers are "
        "lost at the next run. -->",
        "",
        "## The latest `make bench`",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on commit {about['commit']}; "
        f"{total / 60:.1f} min in all (the schema migrated once in {template_seconds:.0f} s, "
        "then each benchmark below). Machine: "
        f"{about['machine']}; load average {about['load']} at the start.",
        "",
    ]
    first_load = float(about["load"].split()[0])
    if first_load > 1.0:
        lines += [
            f"**Not a quiet machine**: the load average was {first_load:.2f} when the run "
            "started, so other work shared the two cores and every figure that is a time or "
            "a rate is inflated by it. Re-run `make bench` on a quiet machine before quoting "
            "these.",
            "",
        ]
    lines += [f"Versions: {about['versions']}.", ""]
    lines += ["| benchmark | target | figure | result |", "|---|---|---|---|"]
    for _, result in rows(runs):
        verdict = result["verdict"]
        shown = f"**{verdict}**" if verdict == "FAIL" else verdict
        figure = result["figure"] + (f" ({result['note']})" if result.get("note") else "")
        lines.append(
            f"| {cell(result['benchmark'])} | {cell(result['target'])} | {cell(figure)} | {shown} |"
        )
    capacity = sandbox_capacity(runs)
    offered = [
        (result["benchmark"], float(result["sandbox_rps"]))
        for item in runs
        if item.benchmark.name != "sandbox"
        for result in item.results
        if "sandbox_rps" in result
    ]
    if capacity and offered:
        lines += [
            "",
            f"The sandbox provider is not the bottleneck: measured in this run at "
            f"{capacity:,.0f} requests/s, it was sent at most:",
            "",
            "| benchmark | requests/s sent to the sandbox | share of its capacity |",
            "|---|---|---|",
        ]
        for label, rate in offered:
            lines.append(f"| {cell(label)} | {rate:,.1f} | {100 * rate / capacity:.1f} % |")
    lines += [
        "",
        "| script | exact command | time | load average before, after |",
        "|---|---|---|---|",
    ]
    for item in runs:
        state = " (timed out)" if item.timed_out else ""
        lines.append(
            f"| `{item.benchmark.script}` ({item.benchmark.issue}) | `{cell(item.command)}` "
            f"| {item.seconds:.0f} s{state} | {item.load_before}; {item.load_after} |"
        )
    lines += ["", "<details><summary>Each benchmark's output</summary>", ""]
    for item in runs:
        lines += [
            f"`{item.command}`",
            "",
            "```",
            *item.output,
            "```",
            "",
        ]
    lines += ["</details>", "", END]
    return "\n".join(lines)


def doc_write(generated: str) -> None:
    """Replace the generated section of docs/benchmarks.md (or put it under the title)."""
    text = DOC.read_text()
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + generated + after
    else:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{generated}\n{rest}"
    DOC.write_text(text)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, default=600, help="soak seconds (issue: 600)")
    parser.add_argument("--only", default="", help="comma-separated names: run only these")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()

    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    broker = os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("make bench runs on PostgreSQL: DATABASE_URL must be postgres://...")
    chosen = [b for b in benchmarks(args.soak) if not args.only or b.name in args.only.split(",")]
    if not chosen:
        raise SystemExit(f"no benchmark named {args.only!r}")
    started = datetime.now(UTC)
    began = time.monotonic()
    about = {"load": loadavg(), "machine": machine(), "versions": versions(base, broker)}
    about["commit"] = commit()
    print(f"make bench: {about['machine']}\n{about['versions']}\ncommit {about['commit']}")
    print(f"load average {about['load']}", flush=True)

    template = urlsplit(database_url(base, "template")).path.lstrip("/")
    env = bench_env(base, broker, template)
    template_seconds = template_migrate(database_url(base, "template"), env)
    print(f"schema migrated into {template} in {template_seconds:.0f} s", flush=True)

    runs: list[Run] = []
    for benchmark in chosen:
        own = dict(env)
        if benchmark.database:
            own["DATABASE_URL"] = database_url(base, benchmark.database)
        args_list = [benchmark.script, *benchmark.args]
        item = Run(benchmark=benchmark, command=command_line(own, args_list))
        runs.append(item)
        run([sys.executable, *args_list], own, timeout=benchmark.timeout, into=item)

    total = time.monotonic() - began
    table_print(runs, total)
    if args.no_doc or args.only:
        print("docs/benchmarks.md left as it was (--no-doc or --only)")
    else:
        doc_write(
            section(
                runs, started=started, total=total, template_seconds=template_seconds,
                about=about,
            )
        )  # fmt: skip
        print(f"wrote the generated section of {DOC.relative_to(ROOT)}")
    failed_to_run = [item.benchmark.name for item in runs if item.exit_code != 0]
    if failed_to_run:
        raise SystemExit(f"benchmarks that did not run to the end: {', '.join(failed_to_run)}")


if __name__ == "__main__":
    main()
