"""The three groups of people (docs/people.md): admin, manager, staff, with their rights.

Permissions are written by `post_migrate`, after every migration has run, so on a fresh
database they do not exist yet when this runs: it creates the missing ones first (the same
call post_migrate makes), then fills the groups. Safe to run again: rows are got or
created, and a group's permissions are set, not appended.

The definitions are frozen here, as a migration's must be; a later change of rights is a
new migration.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# (app label, codename) pairs. The admin group gets every permission there is.
MANAGER = [
    ("billing", "view_reports"),
    ("billing", "view_budget"),
    ("billing", "view_budgetperiod"),
    ("billing", "view_alert"),
    ("office", "view_task"),
    ("office", "view_all_tasks"),
]
STAFF = [
    ("office", "add_task"),
    ("office", "view_task"),
]


def _permissions_created(apps, using):
    # A historic app config has no models module, and create_permissions skips apps
    # without one; mark each for the call, then put it back.
    for app_config in apps.get_app_configs():
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=using)
        finally:
            app_config.models_module = models_module


def _permissions(apps, using, pairs):
    permission = apps.get_model("auth", "Permission")
    found = []
    for app_label, codename in pairs:
        found.append(
            permission.objects.using(using).get(
                content_type__app_label=app_label, codename=codename
            )
        )
    return found


def groups_create(apps, schema_editor):
    using = schema_editor.connection.alias
    _permissions_created(apps, using)
    group = apps.get_model("auth", "Group")
    permission = apps.get_model("auth", "Permission")
    user = apps.get_model("auth", "User")

    admin, _ = group.objects.using(using).get_or_create(name="admin")
    admin.permissions.set(permission.objects.using(using).all())
    manager, _ = group.objects.using(using).get_or_create(name="manager")
    manager.permissions.set(_permissions(apps, using, MANAGER))
    staff, _ = group.objects.using(using).get_or_create(name="staff")
    staff.permissions.set(_permissions(apps, using, STAFF))

    # An office upgraded from before the groups: everyone could submit tasks, and Django
    # staff members (is_staff) read everyone's. Keep that, rather than locking people
    # out: people in no group join `staff`, and staff members keep reading all tasks.
    view_all = _permissions(apps, using, [("office", "view_all_tasks")])[0]
    for person in user.objects.using(using).filter(is_superuser=False, groups__isnull=True):
        person.groups.add(staff)
        if person.is_staff:
            person.user_permissions.add(view_all)


def groups_delete(apps, schema_editor):
    group = apps.get_model("auth", "Group")
    using = schema_editor.connection.alias
    group.objects.using(using).filter(name__in=["admin", "manager", "staff"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("office", "0006_task_cancel_retry_idempotency_token_roles"),
        ("billing", "0009_usagerollup_helper_rows_index"),
        ("agents", "0007_routecandidate_timeout_seconds"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        # Every installed app's models, so that the admin group gets every permission.
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("sessions", "0001_initial"),
    ]

    operations = [migrations.RunPython(groups_create, groups_delete)]
