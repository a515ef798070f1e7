"""People and permissions: the groups and their rights, who reads which tasks, the
manager pages' 403s, Django's auth pages, `createsuperuser` and the demo's people."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from office.models import Task
from office.selectors import task_controllable_by, tasks_visible_to
from tests.factories import PASSWORD, RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

groups_migration = importlib.import_module("office.migrations.0007_people_groups")

MANAGER_PAGES = [
    reverse("billing:reports"),
    reverse("billing:report_export") + "?month=2026-06&by=role",
    reverse("planning:calculator"),
    reverse("planning:whatif"),
    reverse("billing:budgets"),
]


def codenames(group_name: str) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Group.objects.get(name=group_name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def logged_in(client: Client, *groups: str, **fields) -> Client:
    client.force_login(UserFactory(groups=list(groups), **fields))
    return client


# --- The groups -----------------------------------------------------------------------------


def test_the_migration_creates_the_three_groups_with_their_rights() -> None:
    assert codenames("staff") == {"office.add_task", "office.view_task"}
    assert codenames("manager") == {
        "billing.view_reports",
        "billing.view_budget",
        "billing.view_budgetperiod",
        "billing.view_alert",
        "office.view_task",
        "office.view_all_tasks",
    }
    # Managers read; applying the calculator's models to roles is the admins'.
    assert "billing.apply_calculator" not in codenames("manager")


def test_the_admin_group_holds_every_permission_there_is() -> None:
    # A model added later gets its permissions after `migrate`, and so does the admin
    # group (office.people.groups_sync runs after every migrate).
    missing = Permission.objects.exclude(group__name="admin")

    assert list(missing.values_list("content_type__app_label", "codename")) == []


def test_running_the_groups_migration_again_changes_nothing() -> None:
    before = {name: codenames(name) for name in ("admin", "manager", "staff")}
    schema_editor = SimpleNamespace(connection=connection)

    groups_migration.groups_create(global_apps, schema_editor)
    groups_migration.groups_create(global_apps, schema_editor)

    assert Group.objects.count() == 3
    assert {name: codenames(name) for name in ("admin", "manager", "staff")} == before


def test_groups_come_back_after_a_flush_and_admins_get_new_permissions() -> None:
    """What `migrate` runs after the schema (post_migrate): a flushed database gets its
    groups back, a new permission reaches the admin group, and a group an admin changed
    is left as it is."""
    Group.objects.get(name="manager").permissions.add(
        Permission.objects.get(codename="apply_calculator")
    )
    Group.objects.filter(name="staff").delete()
    new = Permission.objects.create(
        codename="view_something_new",
        name="Can view something new",
        content_type=Permission.objects.get(codename="view_task").content_type,
    )

    call_command("migrate", verbosity=0)

    assert codenames("staff") == {"office.add_task", "office.view_task"}
    assert "billing.apply_calculator" in codenames("manager")  # the admin's change stays
    assert new in Group.objects.get(name="admin").permissions.all()


def test_upgrading_puts_people_without_a_group_in_staff_and_keeps_what_they_read() -> None:
    clerk = UserFactory()
    old_staff_member = UserFactory(staff=True)
    manager = UserFactory(groups=["manager"])
    root = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)

    groups_migration.groups_create(global_apps, SimpleNamespace(connection=connection))

    assert list(clerk.groups.values_list("name", flat=True)) == ["staff"]
    assert list(old_staff_member.groups.values_list("name", flat=True)) == ["staff"]
    old_staff_member = get_user_model().objects.get(pk=old_staff_member.pk)  # perm cache
    assert old_staff_member.has_perm("office.view_all_tasks")
    clerk = get_user_model().objects.get(pk=clerk.pk)
    assert not clerk.has_perm("office.view_all_tasks")
    assert list(manager.groups.values_list("name", flat=True)) == ["manager"]
    assert not root.groups.exists()


# --- Who reads which tasks ------------------------------------------------------------------


def test_staff_read_their_own_tasks_only_by_default() -> None:
    ana, ben = UserFactory(groups=["staff"]), UserFactory(groups=["staff"])
    own, _others = TaskFactory(created_by=ana), TaskFactory(created_by=ben)

    assert list(tasks_visible_to(user=ana)) == [own]


def test_staff_read_everyones_tasks_when_the_setting_is_on(settings) -> None:
    settings.ROSTER_STAFF_SEE_ALL_TASKS = True
    ana = UserFactory(groups=["staff"])
    tasks = {TaskFactory(created_by=ana), TaskFactory(), TaskFactory(created_by=None)}

    assert set(tasks_visible_to(user=ana)) == tasks
    # The setting is for people who may read tasks: someone in no group reads none more.
    assert list(tasks_visible_to(user=UserFactory())) == []


@pytest.mark.parametrize("group", ["manager", "admin"])
def test_managers_and_admins_read_every_task(group: str) -> None:
    tasks = {TaskFactory(), TaskFactory(created_by=None)}

    assert set(tasks_visible_to(user=UserFactory(groups=[group]))) == tasks


def test_superusers_read_every_task_without_a_group() -> None:
    root = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    task = TaskFactory()

    assert list(tasks_visible_to(user=root)) == [task]


def test_the_task_list_follows_the_setting(client: Client, settings) -> None:
    logged_in(client, "staff")
    others = TaskFactory()
    url = reverse("office:task_list")

    assert list(client.get(url).context["page_obj"]) == []
    assert client.get(reverse("office:task_detail", args=[others.pk])).status_code == 404

    settings.ROSTER_STAFF_SEE_ALL_TASKS = True
    assert list(client.get(url).context["page_obj"]) == [others]
    assert client.get(reverse("office:task_detail", args=[others.pk])).status_code == 200


@pytest.mark.parametrize(
    ("groups", "own", "expected"),
    [
        (["staff"], True, True),
        (["staff"], False, False),  # even when the setting lets them read it
        (["manager"], False, False),  # managers read, they do not act
        (["manager"], True, False),
        (["admin"], False, True),
        ([], True, False),
    ],
)
def test_who_may_cancel_or_retry_a_task(settings, groups, own: bool, expected: bool) -> None:
    settings.ROSTER_STAFF_SEE_ALL_TASKS = True
    person = UserFactory(groups=groups)
    task = TaskFactory(created_by=person if own else UserFactory())

    assert task_controllable_by(task=task, user=person) is expected


# --- Pages and their 403s -------------------------------------------------------------------


@pytest.mark.parametrize("url", MANAGER_PAGES)
def test_staff_get_a_styled_403_on_every_manager_page(client: Client, url: str) -> None:
    logged_in(client, "staff")

    response = client.get(url)

    assert response.status_code == 403
    page = response.content.decode()
    assert "office/roster.css" in page
    assert "You may not open this page" in page
    assert "manager pages: they need the manager or admin group" in page
    assert "(group: staff)" in page


def test_staff_cannot_post_to_the_calculator_either(client: Client) -> None:
    logged_in(client, "staff")

    assert client.post(reverse("planning:calculator_row"), {"row": "x"}).status_code == 403
    assert client.post(reverse("planning:calculator_apply")).status_code == 403


@pytest.mark.parametrize("url", MANAGER_PAGES)
@pytest.mark.parametrize("group", ["manager", "admin"])
def test_managers_and_admins_open_every_manager_page(client: Client, url: str, group) -> None:
    logged_in(client, group)

    assert client.get(url).status_code == 200


def test_only_admins_may_apply_the_calculator(client: Client) -> None:
    RoleFactory(runnable=True)
    logged_in(client, "manager")
    apply = reverse("planning:calculator_apply")

    assert client.post(apply).status_code == 403
    logged_in(client, "admin")
    assert client.post(apply).status_code == 302


@pytest.mark.parametrize(
    "url",
    [*MANAGER_PAGES, reverse("overview:office"), reverse("password_change")],
)
def test_anonymous_visitors_are_sent_to_log_in(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_someone_in_no_group_is_told_why_they_cannot_read_tasks(client: Client) -> None:
    logged_in(client)

    for url in (reverse("office:task_list"), reverse("overview:office")):
        response = client.get(url)
        assert response.status_code == 403
        assert "who is in no group" in response.content.decode()
    response = client.get(reverse("office:task_list"))
    assert "Reading tasks needs the office.view_task permission" in response.content.decode()


def test_managers_read_tasks_but_cannot_submit_them(client: Client) -> None:
    RoleFactory(runnable=True, slug="coder")
    logged_in(client, "manager")

    assert client.get(reverse("office:task_list")).status_code == 200
    response = client.post(reverse("office:task_create"), {"role": "coder", "prompt": "Hi"})
    assert response.status_code == 403
    assert "Submitting tasks needs the office.add_task permission" in response.content.decode()
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("group", "shown", "hidden"),
    [
        ("staff", ["Overview", "Tasks", "New task"], ["Reports", "Calculator", "Budgets"]),
        (
            "manager",
            ["Overview", "Tasks", "Reports", "Calculator", "What-if", "Budgets"],
            ["New task</a>", "Admin"],
        ),
        ("admin", ["New task", "Reports", "Budgets"], []),
    ],
)
def test_the_navigation_offers_only_what_each_group_may_open(
    client: Client, group: str, shown: list[str], hidden: list[str]
) -> None:
    logged_in(client, group)

    page = client.get(reverse("office:task_list")).content.decode()
    nav = page[page.index('id="main-nav"') : page.index("</nav>")]

    for label in shown:
        assert f">{label}" in nav, label
    for label in hidden:
        assert f">{label}" not in nav, label


# --- Log in, log out, change password -----------------------------------------------------


def test_logging_in_and_out(client: Client) -> None:
    person = UserFactory(username="ana", groups=["staff"])

    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'id="login-form"' in page.content.decode()

    response = client.post(reverse("login"), {"username": "ana", "password": PASSWORD})
    assert response.status_code == 302
    assert int(client.session["_auth_user_id"]) == person.pk

    # Logging out is a POST (a link could log people out from another site); GET is refused.
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_is_refused_on_the_page(client: Client) -> None:
    UserFactory(username="ana")

    response = client.post(reverse("login"), {"username": "ana", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_changing_ones_password(client: Client) -> None:
    person = UserFactory(groups=["staff"])
    client.force_login(person)

    page = client.get(reverse("password_change")).content.decode()
    assert 'id="password-change-form"' in page
    assert "office/roster.css" in page

    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a-much-longer-passphrase-2026",
            "new_password2": "a-much-longer-passphrase-2026",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("password_change_done")
    done = client.get(reverse("password_change_done"))
    assert 'id="password-change-done"' in done.content.decode()
    person.refresh_from_db()
    assert person.check_password("a-much-longer-passphrase-2026")


def test_a_wrong_old_password_changes_nothing(client: Client) -> None:
    person = UserFactory()
    client.force_login(person)

    response = client.post(
        reverse("password_change"),
        {"old_password": "wrong", "new_password1": "x-long-enough-1", "new_password2": "x"},
    )

    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    person.refresh_from_db()
    assert person.check_password(PASSWORD)


def test_createsuperuser_works_as_usual_and_opens_every_page(client: Client, monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", interactive=False, username="root", email="r@example.com")

    root = get_user_model().objects.get(username="root")
    assert root.is_superuser
    assert root.is_staff
    client.force_login(root)
    for url in [*MANAGER_PAGES, reverse("office:task_list"), reverse("office:task_create")]:
        assert client.get(url).status_code == 200, url


# --- The demo's people ----------------------------------------------------------------------


def test_the_demo_creates_one_person_per_group_once(client: Client) -> None:
    from agents.demo import demo_logins_text, demo_seed

    first = demo_seed(sandbox_url="http://127.0.0.1:8765")

    assert [(login.username, login.group) for login in first] == [
        ("admin", "admin"),
        ("manager", "manager"),
        ("staff", "staff"),
    ]
    people = get_user_model().objects.in_bulk(field_name="username")
    for login in first:
        assert login.created
        assert len(login.password) >= 16
        assert people[login.username].check_password(login.password)
        assert list(people[login.username].groups.values_list("name", flat=True)) == [login.group]
    assert people["admin"].is_superuser
    assert not people["manager"].is_superuser
    assert not people["staff"].is_staff
    text = demo_logins_text(first)
    assert f"staff / {first[2].password}" in text

    hashes = dict(get_user_model().objects.values_list("username", "password"))
    second = demo_seed(sandbox_url="http://127.0.0.1:8765")

    assert [login.password for login in second] == [None, None, None]
    assert dict(get_user_model().objects.values_list("username", "password")) == hashes
    again = demo_logins_text(second)
    for login in first:
        assert login.password not in again
    assert "password unchanged" in again


def test_the_demo_leaves_a_person_an_admin_made_alone() -> None:
    from agents.demo import demo_seed

    manager = UserFactory(username="manager")  # made by hand, in no group

    logins = demo_seed(sandbox_url="http://127.0.0.1:8765")

    assert [login.created for login in logins] == [True, False, True]
    manager.refresh_from_db()
    assert manager.check_password(PASSWORD)
    assert not manager.groups.exists()


def test_a_password_can_be_reset_by_email_on_styled_pages(client: Client, mailoutbox) -> None:
    person = UserFactory(email="ana@example.com")

    form = client.get(reverse("password_reset")).content.decode()
    assert 'id="password-reset-form"' in form
    assert "office/roster.css" in form
    response = client.post(reverse("password_reset"), {"email": "ana@example.com"}, follow=True)
    assert "Check your email" in response.content.decode()

    [mail] = mailoutbox
    link = next(word for word in mail.body.split() if "/accounts/reset/" in word)
    path = link[link.index("/accounts/reset/") :]
    confirm = client.get(path, follow=True)
    assert 'id="password-reset-confirm-form"' in confirm.content.decode()
    new = "another-long-passphrase-77"
    done = client.post(
        confirm.redirect_chain[-1][0],
        {"new_password1": new, "new_password2": new},
        follow=True,
    )
    assert "Password set" in done.content.decode()
    person.refresh_from_db()
    assert person.check_password(new)
    assert 'class="error-text">This link does not work' in client.get(path).content.decode()


def test_the_admin_sites_password_change_still_renders(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:password_change")).status_code == 200
