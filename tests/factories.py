"""factory_boy factories for every app, shared by all test modules.

The defaults build the smallest valid row. `RoleFactory(runnable=True)` builds a role
that task_submit accepts: a binding to a priced catalog model through a credential.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from agents.models import Credential, RoleBinding
from agents.providers.registry import ProviderKind
from agents.services import credential_set_secret
from billing.models import CatalogModel, ModelPrice, PriceSource, Usage, UsageStatus
from office.models import Role, Task, TaskStatus
from tests.canary import OPENROUTER_KEY

PASSWORD = "correct-horse-battery"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password(PASSWORD)

    class Params:
        staff = factory.Trait(is_staff=True)

    @factory.post_generation
    def groups(self, create: bool, names: list[str] | None, **kwargs: Any) -> None:
        """`UserFactory(groups=["staff"])`: the person joins these groups (admin,
        manager, staff: office migration 0007). None by default."""
        if create and names:
            from django.contrib.auth.models import Group

            # get, not filter: a missing group fails here, not as a puzzling 403 later.
            self.groups.add(*(Group.objects.get(name=name) for name in names))


class CatalogModelFactory(DjangoModelFactory):
    class Meta:
        model = CatalogModel

    slug = factory.Sequence(lambda n: f"vendor/model-{n}")
    name = factory.LazyAttribute(lambda model: model.slug.split("/")[-1].title())
    context_length = 128_000


class ModelPriceFactory(DjangoModelFactory):
    """A price version; the defaults are $1 / $2 per million input / output tokens."""

    class Meta:
        model = ModelPrice

    model = factory.SubFactory(CatalogModelFactory)
    source = PriceSource.SYNC
    prompt = Decimal("0.000001")
    completion = Decimal("0.000002")


class CredentialFactory(DjangoModelFactory):
    """A credential with its secret encrypted through agents.services, as in the app. The
    secret is a canary (tests/canary.py), so the run's scans would see it leak."""

    class Meta:
        model = Credential

    label = factory.Sequence(lambda n: f"key-{n}")
    provider = ProviderKind.OPENROUTER
    raw_secret = OPENROUTER_KEY

    @classmethod
    def _build(cls, model_class: type[Credential], *args: Any, **kwargs: Any) -> Credential:
        raw_secret = kwargs.pop("raw_secret")
        credential = model_class(*args, **kwargs)
        credential_set_secret(credential=credential, raw_secret=raw_secret)
        return credential

    @classmethod
    def _create(cls, model_class: type[Credential], *args: Any, **kwargs: Any) -> Credential:
        credential = cls._build(model_class, *args, **kwargs)
        credential.save()
        return credential


class RoleBindingFactory(DjangoModelFactory):
    class Meta:
        model = RoleBinding
        skip_postgeneration_save = True

    role = factory.SubFactory("tests.factories.RoleFactory")
    model = factory.SubFactory(CatalogModelFactory)
    credential = factory.SubFactory(CredentialFactory)
    # A priced model: the worker refuses to call one without a price.
    price = factory.RelatedFactory(ModelPriceFactory, model=factory.SelfAttribute("..model"))


class RoleFactory(DjangoModelFactory):
    class Meta:
        model = Role
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"role-{n}")
    name = factory.LazyAttribute(lambda role: role.slug.replace("-", " ").title())

    class Params:
        runnable = factory.Trait(
            binding=factory.RelatedFactory(RoleBindingFactory, factory_related_name="role")
        )


class TaskFactory(DjangoModelFactory):
    """A task row as the worker leaves it, created directly (no dispatch)."""

    class Meta:
        model = Task

    role = factory.SubFactory(RoleFactory)
    prompt = factory.Sequence(lambda n: f"Write haiku number {n} about invoices.")
    created_by = factory.SubFactory(UserFactory)
    status = TaskStatus.QUEUED

    class Params:
        done = factory.Trait(
            status=TaskStatus.DONE,
            result="Ledger lines align\nevery cent accounted for\nthe auditor sleeps",
            input_tokens=120,
            output_tokens=17,
            cost=Decimal("0.000154"),
            provider_calls=1,
            model_label="vendor/model",
        )


class UsageFactory(DjangoModelFactory):
    """A settled ledger row for a task; pass `cost` and tokens as the test needs."""

    class Meta:
        model = Usage

    call_id = factory.LazyFunction(lambda: uuid.uuid4().hex)
    task = factory.SubFactory(TaskFactory)
    role = factory.SelfAttribute("task.role")
    model = factory.SubFactory(CatalogModelFactory)
    price = factory.SubFactory(ModelPriceFactory, model=factory.SelfAttribute("..model"))
    provider = ProviderKind.OPENROUTER
    status = UsageStatus.SETTLED
    input_tokens = 100
    output_tokens = 20
    cost = Decimal("0.00014")
