"""The demo office: five roles bound to sensible catalog models through the sandbox, and
one person per group (admin, manager, staff; docs/people.md).

Idempotent: running it again keeps what an admin changed (bindings pointing elsewhere,
a real key, people's passwords) and only fills in what is missing. A person's password
is generated when the seed creates them and returned that once, to be printed; it is
stored nowhere else, and a later run never resets or re-prints it (`manage.py
changepassword NAME` sets a new one).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from agents.models import CandidateSlot, Credential, RoleBinding, RouteCandidate, RoutingPolicy
from agents.providers.registry import ProviderKind
from agents.services import credential_create
from billing.catalog import catalog_load_file, catalog_parse, catalog_sync
from billing.models import CatalogModel
from office.models import Role

SANDBOX_LABEL = "Sandbox (simulated)"
SANDBOX_KEY = "sandbox-demo-key"


@dataclass(frozen=True)
class DemoRole:
    slug: str
    name: str
    model: str
    description: str
    system_prompt: str
    # Routing (docs/routing.md): the policy and its candidates as (slot, catalog model).
    policy: str = RoutingPolicy.SINGLE
    route: tuple[tuple[str, str], ...] = ()


# The cheapest catalog model that does each job well (2026-06 prices, per 1M tokens in/out).
DEMO_ROLES = (
    DemoRole(
        "coder",
        "Coder",
        "deepseek/deepseek-v4-pro",  # $0.435 / $0.87: strong at code, priced like a small model
        "Writes and reviews code.",
        "You are a careful senior software engineer. Answer with working code and brief reasons.",
        # Quick questions go to a model ten times cheaper, big multi-part jobs to a stronger one.
        policy=RoutingPolicy.TIERED,
        route=(
            (CandidateSlot.LOW, "google/gemini-2.5-flash-lite"),
            (CandidateSlot.MEDIUM, "deepseek/deepseek-v4-pro"),
            (CandidateSlot.HIGH, "anthropic/claude-sonnet-4.5"),
        ),
    ),
    DemoRole(
        "researcher",
        "Researcher",
        "google/gemini-2.5-flash",  # $0.30 / $2.50 with a 1M-token context for long sources
        "Reads sources and reports findings with citations.",
        "You are a meticulous researcher. Cite sources and separate facts from inference.",
    ),
    DemoRole(
        "copywriter",
        "Copywriter",
        "anthropic/claude-haiku-4.5",  # $1 / $5: good prose at a fraction of the big models
        "Writes clear, persuasive copy.",
        "You are a concise, persuasive copywriter. Match the requested tone and length.",
        # A model ten times cheaper drafts first; Haiku rewrites only what fails the check.
        policy=RoutingPolicy.ESCALATE,
        route=(
            (CandidateSlot.CHEAP, "google/gemini-2.5-flash-lite"),
            (CandidateSlot.STRONG, "anthropic/claude-haiku-4.5"),
        ),
    ),
    DemoRole(
        "secretary",
        "Secretary",
        "google/gemini-2.5-flash-lite",  # $0.10 / $0.40: summaries, emails, scheduling
        "Drafts emails, summaries and agendas.",
        "You are an efficient office secretary. Be brief, polite and precise.",
    ),
    DemoRole(
        "designer",
        "Designer",
        "google/gemini-2.5-flash-image",  # $0.30 / $2.50 and it can output images
        "Describes and drafts visual designs.",
        "You are a pragmatic visual designer. Describe layouts, palettes and assets concretely.",
    ),
)


# The demo's people: (username, group). The admin is also a superuser, so that the admin
# site and every permission added later are theirs, as `createsuperuser` would make them.
DEMO_PEOPLE = (("admin", "admin"), ("manager", "manager"), ("staff", "staff"))


@dataclass(frozen=True)
class DemoLogin:
    """A demo person. `password` is set only when this run created them."""

    username: str
    group: str
    password: str | None

    @property
    def created(self) -> bool:
        return self.password is not None


def demo_seed(*, sandbox_url: str | None = None) -> list[DemoLogin]:
    """Load the bundled catalog, create the roles, the sandbox credential, the bindings
    and one person per group. Returns the people in DEMO_PEOPLE order; the password of
    each one created by this call (None for one who existed: their password is left
    as it is). Raises Group.DoesNotExist if the groups' migration has not run.
    """
    sandbox_url = (sandbox_url or settings.ROSTER_SANDBOX_URL).rstrip("/")
    if not CatalogModel.objects.exists():
        catalog_sync(entries=catalog_parse(catalog_load_file(settings.ROSTER_CATALOG_SNAPSHOT)))
    with transaction.atomic():
        credential = Credential.objects.filter(label=SANDBOX_LABEL).first()
        if credential is None:
            credential = credential_create(
                label=SANDBOX_LABEL,
                provider=ProviderKind.OPENROUTER,
                base_url=f"{sandbox_url}/api/v1",
                raw_secret=SANDBOX_KEY,
                is_simulated=True,
            )
        for spec in DEMO_ROLES:
            role, _ = Role.objects.get_or_create(
                slug=spec.slug,
                defaults={
                    "name": spec.name,
                    "description": spec.description,
                    "system_prompt": spec.system_prompt,
                },
            )
            binding, created = RoleBinding.objects.get_or_create(
                role=role,
                defaults={
                    "model": CatalogModel.objects.get(slug=spec.model),
                    "credential": credential,
                    "max_tokens": 1024,
                    "policy": spec.policy,
                },
            )
            if created:
                for position, (slot, slug) in enumerate(spec.route, start=1):
                    RouteCandidate.objects.create(
                        binding=binding,
                        slot=slot,
                        position=position,
                        model=CatalogModel.objects.get(slug=slug),
                        credential=credential,
                    )
        return [_demo_person(username, group) for username, group in DEMO_PEOPLE]


def demo_logins_text(logins: list[DemoLogin]) -> str:
    """How the commands print the demo's people: the new ones with their password (the
    one time it is shown), the others as kept."""
    lines = []
    for login in logins:
        if login.created:
            lines.append(f"  {login.group:<8} {login.username} / {login.password}")
        else:
            lines.append(
                f"  {login.group:<8} {login.username} (exists; password unchanged, "
                f"`manage.py changepassword {login.username}` to set one)"
            )
    return "\n".join(lines)


def _demo_person(username: str, group_name: str) -> DemoLogin:
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        # Never touched again: its password and groups are its owner's or an admin's.
        return DemoLogin(username=username, group=group_name, password=None)
    password = secrets.token_urlsafe(12)
    if group_name == "admin":
        user = user_model.objects.create_superuser(username, f"{username}@localhost", password)
    else:
        user = user_model.objects.create_user(username, f"{username}@localhost", password)
    user.groups.add(Group.objects.get(name=group_name))
    return DemoLogin(username=username, group=group_name, password=password)
