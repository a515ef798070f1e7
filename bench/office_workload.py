"""A reference week of office work, replayed under two configurations: what it costs.

    DJANGO_SECRET_KEY=bench .venv/bin/python bench/office_workload.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_workload \\
        .venv/bin/python bench/office_workload.py            # PostgreSQL instead of SQLite

The week (deterministic: `--seed`, documented in docs/benchmarks.md) is a task mix per
role: many short secretary and copywriter tasks, many of them follow-ups in threads,
fewer researcher tasks that read web pages, a few large coder tasks among quick
questions, and some designer images. It is replayed twice, each time on a fresh database
(an SQLite file in a temporary folder, or the PostgreSQL database of DATABASE_URL,
dropped and recreated for each configuration), against the real sandbox provider process
(`manage.py sandbox_provider`) for the models and a loopback page server for the web
pages, through the real services: `task_submit`, the local helper's preparation
(`agents.preparation.task_prepare`) and the execution service (`task_execute`), run
in-process in the order the workers would run them.

- **A, one premium model**: every role bound to `anthropic/claude-sonnet-4.5` (policy
  single; `--premium SLUG` for another catalog model), and no local helper. The replay
  runs the same preparation (so both configurations send the same prompts); what A pays
  for the overhead it has no helper for is computed from the helper's ledger rows: the
  premium model reads the raw pages and whole histories instead of the helper's text,
  and writes the titles (the headline). The ledger's own shadow price of that work, and
  A's paid calls alone (as if A had the helper for free), are printed beside it.
- **B, Roster**: the demo office's per-role bindings and routing policies
  (agents/demo.py: tiered coder, escalating copywriter, cheap secretary, ...) with the
  local helper doing the overhead for free.

Prices: the bundled catalog snapshot (billing/data), as the demo loads it. Figures come
from the billing reports (rollups), checked against a rebuild from the ledger. Prints
both totals (exact), the reduction, the helper's share of the tokens, and pass/fail
against the targets (>= 85 % cheaper, helper >= 20 % of tokens).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import result_print  # noqa: E402

from billing.money import EXACT, money_mul, money_sum  # noqa: E402 (pure Decimal; needs no Django)

# Config A's model (`--premium` picks another): a frontier model many offices default to,
# priced between OpenAI's GPT-5 and Anthropic's Opus, and the demo coder's high tier, so
# the hardest coding tasks run on it in both configurations.
PREMIUM_MODEL = "anthropic/claude-sonnet-4.5"
TARGET_REDUCTION = Decimal("0.85")
TARGET_HELPER_SHARE = Decimal("0.20")
READY_LINE = re.compile(r"listening on http://([^:]+):(\d+)")
# The sandbox's filler words (alpha ... lima) average 5.17 letters: a word and its space
# are 6.17 characters, 1.54 tokens at four characters a token.
TOKENS_PER_WORD = Decimal("1.54")
# Gemini 2.5 Flash Image bills each generated image as 1,290 output tokens (Google's
# Gemini API pricing page).
IMAGE_TOKENS = 1290


# --- The reference week -------------------------------------------------------------------


@dataclass
class Turn:
    """One task of the week: who asks which role what, and how long the answer is."""

    role: str
    person: str
    prompt: str
    output_tokens: int
    pages: list[int] = field(default_factory=list)  # ids served by the page server
    poor_first_draft: bool = False  # the copywriter's cheap model answers poorly
    follows: int | None = None  # index of the turn this one follows up (a thread)


PEOPLE = ("ana", "ben", "chloe", "dev", "emma", "finn")

VOCABULARY = (
    "budget invoice supplier meeting agenda quarter client proposal contract renewal "
    "deadline schedule review onboarding hiring policy travel expense report forecast "
    "pipeline campaign launch newsletter webinar survey customer feedback churn pricing "
    "discount partner warehouse shipment delay inventory audit compliance security "
    "password backup server outage incident migration database dashboard metrics revenue "
    "margin payroll benefits holiday office lease printer catering event venue sponsor "
    "brand tone headline landing page product feature roadmap release notes support "
    "ticket escalation refund warranty invoice reminder payment terms approval manager "
    "team offsite workshop training slides summary minutes action items owner follow-up"
)
WORDS = tuple(VOCABULARY.split())

TOPICS = (
    "the supplier contract renewal", "next quarter's marketing budget", "the office move",
    "the customer onboarding survey", "the product launch webinar", "late invoice payments",
    "the hiring plan for support", "the security audit findings", "the holiday schedule",
    "the partner discount programme", "the warehouse shipment delays", "the board update",
)  # fmt: skip


def sentence(rng: random.Random, words: int) -> str:
    chosen = [rng.choice(WORDS) for _ in range(words)]
    return chosen[0].capitalize() + " " + " ".join(chosen[1:]) + "."


def text_of(rng: random.Random, tokens: int) -> str:
    """Plain prose of about `tokens` tokens (four characters a token)."""
    parts: list[str] = []
    length = 0
    while length < tokens * 4:
        part = sentence(rng, rng.randint(8, 22))
        parts.append(part)
        length += len(part) + 1
    return " ".join(parts)


def code_of(rng: random.Random, tokens: int) -> str:
    """A Python module of about `tokens` tokens, in a fenced block."""
    lines = ["```python", "import json", "from dataclasses import dataclass", ""]
    length = sum(len(line) + 1 for line in lines)
    n = 0
    while length < tokens * 4:
        n += 1
        a, b = rng.choice(WORDS).replace("-", "_"), rng.choice(WORDS).replace("-", "_")
        block = [
            f"def {a}_{b}_{n}(records, limit={rng.randint(2, 99)}):",
            f"    # {sentence(rng, 8)}",
            "    totals = {}",
            "    for record in records:",
            f"        key = record.get('{a}', '{b}')",
            f"        totals[key] = totals.get(key, 0) + record.get('{b}', 0)",
            "        if len(totals) > limit:",
            "            break",
            "    return json.dumps(totals, sort_keys=True)",
            "",
        ]
        lines += block
        length += sum(len(line) + 1 for line in block)
    return "\n".join([*lines, "```"])


def words_for(tokens: int) -> int:
    return max(1, int((Decimal(tokens) / TOKENS_PER_WORD).to_integral_value()))


def directive(turn: Turn) -> str:
    """The sandbox marker that sets the answer's length (and, for some copywriter first
    drafts, a poor answer from the cheap model only); it ends every prompt."""
    quality = "poor@google/gemini-2.5-flash-lite" if turn.poor_first_draft else "good"
    return f"\n\n[[sandbox words={words_for(turn.output_tokens)} quality={quality}]]"


def reference_week(seed: int) -> list[Turn]:
    """The week's tasks in the order they are given (a thread's turns in order).

    Sizes, per role and week (a small office of six people; tokens at four characters):
    - secretary, 150 tasks: emails, agendas and minutes. Prompts 60-400 tokens, a fifth
      of them with pasted notes of 800-2,500; answers 120-400. Threads: 60 first tasks,
      of which 30 get 1-4 follow-ups ("shorter", "add the dates").
    - copywriter, 60 tasks: briefs of 150-600 tokens, drafts of 250-900; threads: 20
      first drafts, 4 of them campaigns revised 6, 7, 8 and 9 times (these outgrow the
      history budget), 10 revised once; revision notes of 60-300 tokens. 15 % of first
      drafts come back poor from the cheap model (the escalation check sends them to the
      strong one).
    - researcher, 24 tasks: a question of 60-250 tokens over 1-3 web pages (30-120 KiB of
      HTML around an article of 800-3,500 words), answers of 600-1,500.
    - coder, 20 tasks: 6 large (a module of 3,000-8,000 tokens to refactor, with tests, in
      steps; answers 1,500-3,500) among 14 quick questions (100-500 tokens; answers
      150-600).
    - designer, 16 tasks: a brief of 120-400 tokens; one or two images (1,290 output
      tokens each) and a short description of 80-200 tokens.
    """
    rng = random.Random(seed)
    turns: list[Turn] = []
    threads: list[list[Turn]] = []

    def person() -> str:
        return rng.choice(PEOPLE)

    # Secretary: 60 threads, half of them with follow-ups; 150 tasks in all.
    secretary_first = 60
    follow_ups = _spread(rng, total=150 - secretary_first, threads=30, most=4)
    for n in range(secretary_first):
        topic = rng.choice(TOPICS)
        notes = ""
        if rng.random() < 0.2:
            notes = "\n\nMy notes from the meeting:\n" + text_of(rng, rng.randint(800, 2500))
        ask = rng.choice(
            [
                f"Draft a polite email to the team about {topic}.",
                f"Write an agenda for Thursday's meeting on {topic}.",
                f"Summarise the minutes on {topic} as action items with owners.",
                f"Reply to the client who wrote about {topic}; keep it short.",
            ]
        )
        thread = [
            Turn(
                "secretary",
                person(),
                f"{ask} {text_of(rng, rng.randint(40, 350))}{notes}",
                rng.randint(120, 400),
            )
        ]
        for _ in range(follow_ups[n] if n < len(follow_ups) else 0):
            thread.append(
                Turn(
                    "secretary",
                    thread[0].person,
                    rng.choice(["Make it shorter. ", "Add the dates and owners. ",
                                "Warmer tone, please. ", "Translate the key points. "])
                    + text_of(rng, rng.randint(30, 200)),
                    rng.randint(120, 400),
                )
            )  # fmt: skip
        threads.append(thread)

    # Copywriter: 20 threads; 4 campaigns revised 6-9 times, 10 drafts revised once;
    # 60 tasks in all.
    follow_ups = [6, 7, 8, 9] + [1] * 10 + [0] * 6
    rng.shuffle(follow_ups)
    for n in range(20):
        product = rng.choice(TOPICS)
        thread = [
            Turn(
                "copywriter",
                person(),
                f"Write landing page copy about {product}. Brief: "
                + text_of(rng, rng.randint(150, 600)),
                rng.randint(250, 900),
                poor_first_draft=rng.random() < 0.15,
            )
        ]
        for _ in range(follow_ups[n] if n < len(follow_ups) else 0):
            thread.append(
                Turn(
                    "copywriter",
                    thread[0].person,
                    "Revise the draft: " + text_of(rng, rng.randint(60, 300)),
                    rng.randint(250, 900),
                )
            )
        threads.append(thread)

    # Researcher: 24 tasks over 1-3 pages each.
    page = 0
    for _ in range(24):
        count = rng.randint(1, 3)
        pages = list(range(page, page + count))
        page += count
        threads.append(
            [
                Turn(
                    "researcher",
                    person(),
                    f"Read these pages and report what they say about {rng.choice(TOPICS)}, "
                    "with citations. " + text_of(rng, rng.randint(40, 230)),
                    rng.randint(600, 1500),
                    pages=pages,
                )
            ]
        )

    # Coder: 6 large tasks among 14 quick questions.
    for n in range(20):
        if n % 3 == 1 and n < 18:
            prompt = (
                "Refactor this module and add tests. First split the parsing from the "
                "totals, then add type hints, then write pytest tests for each function, "
                "finally explain the changes.\n\n" + code_of(rng, rng.randint(3000, 8000))
            )
            output = rng.randint(1500, 3500)
        else:
            prompt = rng.choice(
                [
                    "How do I read a CSV file with a header in Python? ",
                    "What does this error mean: KeyError in a dict lookup? ",
                    "Translate this shell loop into Python. ",
                ]
            ) + text_of(rng, rng.randint(80, 480))
            output = rng.randint(150, 600)
        threads.append([Turn("coder", person(), prompt, output)])

    # Designer: 16 image tasks.
    for _ in range(16):
        images = rng.choice([1, 1, 2])
        threads.append(
            [
                Turn(
                    "designer",
                    person(),
                    f"Design a banner image for {rng.choice(TOPICS)}. "
                    + text_of(rng, rng.randint(120, 400)),
                    images * IMAGE_TOKENS + rng.randint(80, 200),
                )
            ]
        )

    # The week's order: threads shuffled, each thread's turns one after the other.
    rng.shuffle(threads)
    for thread in threads:
        first = len(turns)
        for number, turn in enumerate(thread):
            turn.follows = None if number == 0 else first + number - 1
            turns.append(turn)
    return turns


def _spread(rng: random.Random, *, total: int, threads: int, most: int) -> list[int]:
    """`total` follow-ups over the first `threads` threads, 1 to `most` each."""
    counts = [1] * threads
    while sum(counts) < total:
        n = rng.randrange(threads)
        if counts[n] < most:
            counts[n] += 1
    return counts


def page_html(page: int, seed: int) -> str:
    """A web page: an article of 800-3,500 words inside a site's usual weight (scripts,
    styles, navigation, related links, footer), 30-120 KiB of HTML in all."""
    rng = random.Random(seed * 1000 + page)
    words = rng.randint(800, 3500)
    paragraphs: list[str] = []
    written = 0
    while written < words:
        n = rng.randint(40, 120)
        paragraphs.append(" ".join(sentence(rng, rng.randint(10, 24)) for _ in range(n // 15)))
        written += n
    title = f"{rng.choice(TOPICS).capitalize()}: what we found"
    target = rng.randint(30, 120) * 1024
    nav = "".join(f'<li><a href="/section/{w}">{w.title()}</a></li>' for w in WORDS[:40])
    related = "".join(
        f'<li><a href="/article/{rng.randint(1, 10**6)}">{sentence(rng, 8)}</a></li>'
        for _ in range(20)
    )
    body = (
        f"<header><nav><ul>{nav}</ul></nav></header><main><article><h1>{title}</h1>"
        f"<p class='byline'>By {rng.choice(PEOPLE).title()} Reporter</p>"
        + "".join(f"<p>{p}</p>" for p in paragraphs)
        + f"</article><aside><h2>Related</h2><ul>{related}</ul></aside></main>"
        "<footer><p>Copyright 2026 Example Media. All rights reserved.</p></footer>"
    )
    # The rest of the weight is what real pages carry: inline configuration and styles.
    filler = max(0, target - len(body) - 400)
    config = json.dumps({"experiments": [rng.random() for _ in range(filler // 40)]})
    head = (
        f"<head><meta charset='utf-8'><title>{title}</title>"
        f"<script>window.__CONFIG__ = {config};</script>"
        "<style>body{font-family:sans-serif}</style></head>"
    )
    return f"<!DOCTYPE html><html lang='en'>{head}<body>{body}</body></html>"


class PageServer:
    """The week's web pages on a loopback port (GET /pages/N.html)."""

    def __init__(self, seed: int) -> None:
        pages_seed = seed

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                match = re.fullmatch(r"/pages/(\d+)\.html", self.path)
                if match is None:
                    self.send_error(404)
                    return
                body = page_html(int(match[1]), pages_seed).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


# --- Processes and databases (parent) -------------------------------------------------------


def sandbox_start(log_dir: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    """The real sandbox provider process on a free port. Returns it and its base URL."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("DJANGO_SECRET_KEY", "bench")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_provider", "--port", "0",
         "--log-file", str(log_dir / f"sandbox-requests-{name}.jsonl")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    match = READY_LINE.search(line)
    if not match:
        server.kill()
        raise SystemExit(f"the sandbox did not start: {line!r}")
    return server, f"http://{match[1]}:{match[2]}"


def database_url(base: str | None, workdir: Path, config: str) -> str:
    """The configuration's own database: the two replays run at the same time."""
    if not base:
        return f"sqlite:///{workdir / f'workload-{config}.sqlite3'}"
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must be postgres://... (or unset, for SQLite)")
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path}_{config.lower()}"))


def child_start(*, config: str, database_url: str, args: argparse.Namespace, sandbox: str,
                pages: str, workdir: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    """Replay the week under one configuration in its own process (its own database,
    sandbox and Django settings); its figures land in result-CONFIG.json."""
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="office.settings",
        ROSTER_VAR_DIR=str(workdir / f"var-{config}"),
        ROSTER_FETCH_ALLOW="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("DJANGO_SECRET_KEY", "bench")
    env.setdefault("ROSTER_FERNET_KEYS", "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs=")
    (workdir / f"var-{config}").mkdir(exist_ok=True)
    command = [
        sys.executable, __file__, "--child", config, "--seed", str(args.seed),
        "--premium", args.premium, "--sandbox", sandbox, "--pages", pages,
        "--out", str(workdir / f"result-{config}.json"),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env)


# --- One configuration (child) --------------------------------------------------------------


def database_recreate() -> None:
    import django
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db['NAME']}{suffix}").unlink(missing_ok=True)
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return
    django.setup()
    from databases import database_recreate as postgres_recreate

    postgres_recreate()


def office_configure(*, config: str, sandbox: str, premium_slug: str) -> None:
    """The demo office on the sandbox; for A, every role rebound to the premium model."""
    from django.contrib.auth import get_user_model

    from agents.demo import demo_seed
    from agents.models import RoleBinding, RoutingPolicy
    from billing.models import CatalogModel

    demo_seed(sandbox_url=sandbox)
    for username in PEOPLE:
        get_user_model().objects.create(username=username)
    if config == "A":
        premium = CatalogModel.objects.get(slug=premium_slug)
        for binding in RoleBinding.objects.all():
            binding.candidates.all().delete()
            binding.model = premium
            binding.policy = RoutingPolicy.SINGLE
            binding.save(update_fields=["model", "policy"])


def week_replay(*, turns: list[Turn], pages: str) -> None:
    """Submit each task as people would, and run the work the submission dispatches
    (preparation, then execution) in-process, in order, until the task is finished."""
    from unittest import mock

    from django.contrib.auth import get_user_model

    from agents.execution import task_execute
    from agents.preparation import task_prepare
    from office.celery import app as celery_app
    from office.models import Task
    from office.services import task_submit

    people = {user.username: user for user in get_user_model().objects.all()}
    dispatched: list[tuple[str, int]] = []
    run = {"agents.tasks.prepare_task": task_prepare, "agents.tasks.execute_task": task_execute}

    def send_task(name: str, args: list[int], **_: Any) -> None:
        dispatched.append((name, args[0]))

    ids: list[int] = []
    with mock.patch.object(celery_app, "send_task", side_effect=send_task):
        for turn in turns:
            task = task_submit(
                role=turn.role,
                prompt=turn.prompt + directive(turn),
                created_by=people[turn.person],
                max_tokens=math.ceil(turn.output_tokens * 1.25) + 64,
                urls=[f"{pages}/pages/{n}.html" for n in turn.pages],
                follow_up_of=None if turn.follows is None else ids[turn.follows],
            )
            ids.append(task.pk)
            while dispatched:
                name, task_id = dispatched.pop(0)
                run[name](task_id=task_id, worker_id="bench-worker")
            status = Task.objects.values_list("status", flat=True).get(pk=task.pk)
            if status != "done":
                error = Task.objects.values_list("error", flat=True).get(pk=task.pk)
                raise SystemExit(f"task {task.pk} ({turn.role}) ended {status}: {error}")


def measured(*, premium_slug: str) -> dict[str, Any]:
    """The configuration's figures, from the billing reports (rollups), cross-checked."""
    from django.db.models import Count

    from billing.models import CatalogModel, Usage, UsageRollup
    from billing.money import money_sum
    from billing.reports import spend_breakdown, spend_totals
    from billing.rollups import rollups_rebuild
    from billing.selectors import price_current
    from office.fields import decimal_text
    from office.models import Task

    days = sorted(UsageRollup.objects.values_list("day", flat=True).distinct())
    start, end = days[0], days[-1].fromordinal(days[-1].toordinal() + 1)
    totals = spend_totals(start=start, end=end)
    ledger_cost = money_sum(Usage.objects.values_list("cost", flat=True))
    if ledger_cost != totals.cost:
        raise SystemExit(f"rollups say {totals.cost}, the ledger {ledger_cost}")
    rebuild = rollups_rebuild(dry_run=True)
    operations: dict[str, dict[str, Any]] = {}
    helper_rows = Usage.objects.exclude(helper_operation="").values_list(
        "helper_operation", "input_tokens", "output_tokens", "shadow_cost"
    )
    for operation, tokens_in, tokens_out, shadow in helper_rows:
        sums = operations.setdefault(
            operation, {"count": 0, "input_tokens": 0, "output_tokens": 0, "shadow": []}
        )
        sums["count"] += 1
        sums["input_tokens"] += tokens_in
        sums["output_tokens"] += tokens_out
        sums["shadow"].append(shadow)
    for sums in operations.values():
        sums["shadow_usd"] = decimal_text(money_sum(sums.pop("shadow")))
    premium = price_current(model=CatalogModel.objects.get(slug=premium_slug))
    assert premium is not None
    return {
        "tasks": dict(Task.objects.values_list("status").annotate(n=Count("id")).order_by()),
        "operations": operations,
        "premium_prices": {
            "prompt": decimal_text(premium.prompt),
            "completion": decimal_text(premium.completion),
        },
        "totals": totals.as_record(),
        "roles": [row.as_record(by="role") for row in spend_breakdown(start=start, end=end,
                                                                      by="role")],
        "models": [row.as_record(by="model") for row in spend_breakdown(start=start, end=end,
                                                                        by="model")],
        "rebuild_differences": len(rebuild.differences),
        "ledger_rows": rebuild.ledger_rows,
    }  # fmt: skip


def child_main(args: argparse.Namespace) -> None:
    database_recreate()
    # One line per compressed thread is the worker's log, not the benchmark's output.
    logging.getLogger("agents").setLevel(logging.WARNING)
    office_configure(config=args.child, sandbox=args.sandbox, premium_slug=args.premium)
    turns = reference_week(args.seed)
    started = time.perf_counter()
    week_replay(turns=turns, pages=args.pages)
    result = measured(premium_slug=args.premium) | {"replay_seconds": time.perf_counter() - started}
    Path(args.out).write_text(json.dumps(result))


# --- Report (parent) --------------------------------------------------------------------------


def week_summary(turns: list[Turn]) -> str:
    by_role: dict[str, list[Turn]] = {}
    for turn in turns:
        by_role.setdefault(turn.role, []).append(turn)
    lines = []
    for role, group in by_role.items():
        prompt = sum(len(t.prompt) for t in group) // 4
        output = sum(t.output_tokens for t in group)
        follow = sum(t.follows is not None for t in group)
        pages = sum(len(t.pages) for t in group)
        lines.append(
            f"  {role:<11} {len(group):>4} tasks ({follow} follow-ups, {pages} pages): "
            f"~{prompt:,} prompt tokens, {output:,} answer tokens"
        )
    return "\n".join(lines)


def percent(ratio: Decimal) -> str:
    return f"{(ratio * 100).quantize(Decimal('0.1'))} %"


@dataclass(frozen=True)
class PremiumOffice:
    """What config A, the premium-only office, pays: its paid calls, plus the overhead it
    has no local helper for, three ways (see docs/benchmarks.md)."""

    paid: Decimal
    shadow: Decimal  # the ledger's shadow price of the helper's work on the premium model
    reads: Decimal  # the premium model reads the raw material the helper condensed

    @classmethod
    def of(cls, result: dict[str, Any]) -> PremiumOffice:
        prompt = Decimal(result["premium_prices"]["prompt"])
        completion = Decimal(result["premium_prices"]["completion"])
        extra = []
        for operation, sums in result["operations"].items():
            if operation == "title":
                # Asked in the same call: the premium model writes the title.
                extra.append(money_mul(completion, sums["output_tokens"]))
            elif operation in ("extract_page", "summarize", "compress_history"):
                # It reads the page or the whole history instead of the helper's text.
                condensed = sums["input_tokens"] - sums["output_tokens"]
                extra.append(money_mul(prompt, max(condensed, 0)))
        paid = Decimal(result["totals"]["cost_usd"])
        return cls(
            paid=paid,
            shadow=EXACT.add(paid, Decimal(result["totals"]["helper_savings_usd"])),
            reads=EXACT.add(paid, money_sum(extra)),
        )


def report(results: dict[str, dict[str, Any]], *, premium_slug: str) -> bool:
    """Print both configurations and the comparison. Returns True when both targets pass."""
    b = results["B"]["totals"]
    premium = PremiumOffice.of(results["A"])
    roster = Decimal(b["cost_usd"])
    helper_tokens = b["helper_input_tokens"] + b["helper_output_tokens"]
    all_tokens = helper_tokens + b["input_tokens"] + b["output_tokens"]
    share = Decimal(helper_tokens) / Decimal(all_tokens)

    for config in "AB":
        result = results[config]
        totals = result["totals"]
        print(
            f"\nconfig {config}: tasks {result['tasks']}; {result['ledger_rows']} ledger rows, "
            f"rollups equal a rebuild: {'yes' if result['rebuild_differences'] == 0 else 'NO'}; "
            f"replayed in {result['replay_seconds']:.0f} s"
        )
        print(
            f"  paid calls {totals['calls']}: {totals['input_tokens']:,} tokens in "
            f"({totals['cached_input_tokens']:,} cached) / {totals['output_tokens']:,} out, "
            f"${totals['cost_usd']}"
        )
        for operation, sums in sorted(result["operations"].items()):
            print(
                f"  helper {operation:<19} {sums['count']:>4} x: {sums['input_tokens']:>9,} "
                f"in / {sums['output_tokens']:>7,} out, shadow price ${sums['shadow_usd']}"
            )
        for row in result["roles"]:
            print(
                f"    {row['role']:<11} calls {row['calls']:>4}  in {row['input_tokens']:>8,}  "
                f"out {row['output_tokens']:>7,}  ${row['cost_usd']:<13}  helper tokens "
                f"{row['helper_input_tokens'] + row['helper_output_tokens']:>9,}"
            )

    def reduction(a_total: Decimal) -> Decimal:
        return 1 - roster / a_total

    headline = reduction(premium.reads)
    print(
        f"\nA, one premium model ({premium_slug}), no local helper: ${premium.reads}\n"
        f"   = paid calls ${premium.paid} + the raw pages and whole histories it reads and "
        f"the titles it writes ${EXACT.subtract(premium.reads, premium.paid)}"
    )
    print(f"B, Roster (per-role policies + local helper): ${roster}")
    print(
        f"reduction: {percent(headline)} (target >= {percent(TARGET_REDUCTION)}: "
        f"{'pass' if headline >= TARGET_REDUCTION else 'FAIL'})"
    )
    print(
        f"  other accountings of A: the ledger's shadow price of the helper's work "
        f"(${premium.shadow}): {percent(reduction(premium.shadow))}; A's paid calls alone, "
        f"as if A had the helper for free (${premium.paid}): {percent(reduction(premium.paid))}"
    )
    print(
        f"local helper's share of B's tokens: {helper_tokens:,} of {all_tokens:,} = "
        f"{percent(share)} (target >= {percent(TARGET_HELPER_SHARE)}: "
        f"{'pass' if share >= TARGET_HELPER_SHARE else 'FAIL'})"
    )
    consistent = all(results[config]["rebuild_differences"] == 0 for config in "AB")
    note = "" if consistent else "rollups differ from a rebuild from the ledger"
    result_print(
        benchmark=f"office week: Roster against one premium model ({premium_slug})",
        target=f">= {percent(TARGET_REDUCTION)} cheaper",
        figure=f"{percent(headline)} cheaper (${roster} against ${premium.reads}; "
        f"{percent(reduction(premium.paid))} against A's paid calls alone)",
        passed=headline >= TARGET_REDUCTION and consistent,
        note=note,
    )
    result_print(
        benchmark="office week: the local helper's share of Roster's tokens",
        target=f">= {percent(TARGET_HELPER_SHARE)}",
        figure=f"{percent(share)} ({helper_tokens:,} of {all_tokens:,} tokens)",
        passed=share >= TARGET_HELPER_SHARE and consistent,
        note=note,
    )
    return headline >= TARGET_REDUCTION and share >= TARGET_HELPER_SHARE


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026, help="the reference week's seed")
    parser.add_argument(
        "--premium", default=PREMIUM_MODEL, help=f"config A's model (default {PREMIUM_MODEL})"
    )
    parser.add_argument("--child", choices=("A", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--sandbox", help=argparse.SUPPRESS)
    parser.add_argument("--pages", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    turns = reference_week(args.seed)
    print(f"reference week (seed {args.seed}): {len(turns)} tasks")
    print(week_summary(turns))
    with tempfile.TemporaryDirectory(prefix="roster-workload-") as tmp:
        workdir = Path(tmp)
        pages = PageServer(args.seed)
        sandboxes = {}
        try:
            # The two configurations replay at the same time, each with a sandbox of its
            # own (its prompt caches start cold, as they would alone): the figures are
            # costs, which do not depend on the time taken.
            children = {}
            for config in "AB":
                sandboxes[config], sandbox_url = sandbox_start(workdir, config)
                children[config] = child_start(
                    config=config,
                    database_url=database_url(os.environ.get("DATABASE_URL"), workdir, config),
                    args=args,
                    sandbox=sandbox_url,
                    pages=pages.url,
                    workdir=workdir,
                )
            for config, child in children.items():
                if child.wait() != 0:
                    raise SystemExit(f"config {config}'s replay failed (exit {child.returncode})")
            results: dict[str, dict[str, Any]] = {
                config: json.loads((workdir / f"result-{config}.json").read_text())
                for config in "AB"
            }
        finally:
            pages.stop()
            for sandbox in sandboxes.values():
                sandbox.terminate()
                sandbox.wait(timeout=10)
    report(results, premium_slug=args.premium)


if __name__ == "__main__":
    main()
