"""The groups of people and their rights (docs/people.md), kept in step with the models.

Office migration 0007 created the groups once. They must also survive what a migration
cannot see: a model added later brings permissions the admin group ("every permission")
must get, and a database flushed and migrated again (the test suite's transactional
tests do it after each test) loses the groups with their rows. So, like Django's own
permissions, they are brought up to date after every `migrate` (office.apps).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS

# "app_label.codename" of each group's rights; the admin group has every permission.
MANAGER_RIGHTS = (
    "billing.view_reports",
    "billing.view_budget",
    "billing.view_budgetperiod",
    "billing.view_alert",
    "office.view_task",
    "office.view_all_tasks",
)
STAFF_RIGHTS = ("office.add_task", "office.view_task")
GROUP_RIGHTS: dict[str, tuple[str, ...]] = {"manager": MANAGER_RIGHTS, "staff": STAFF_RIGHTS}


def groups_sync(*, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Create the admin, manager and staff groups that are missing, with their rights,
    and give the admin group any permission it lacks.

    An existing manager or staff group is left as an admin may have changed it. Returns
    False, changing nothing, while some right is not a permission yet (post_migrate
    creates an app's permissions when that app's turn comes; a later call completes it).
    """
    permissions = Permission.objects.using(using)
    found = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in permissions.values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    wanted = {name for rights in GROUP_RIGHTS.values() for name in rights}
    if not wanted <= found.keys():
        return False
    groups = Group.objects.using(using)
    admin, _ = groups.get_or_create(name="admin")
    admin.permissions.add(*found.values())
    for name, rights in GROUP_RIGHTS.items():
        group, created = groups.get_or_create(name=name)
        if created:
            group.permissions.set([found[right] for right in rights])
    return True


def groups_sync_after_migrate(*, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """post_migrate receiver (office.apps): see the module's docstring."""
    groups_sync(using=using)
