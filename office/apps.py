from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OfficeConfig(AppConfig):
    name = "office"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from office.people import groups_sync_after_migrate

        # Every app's post_migrate, not only office's: the rights live in several apps,
        # and each app's permissions appear on its own turn.
        post_migrate.connect(groups_sync_after_migrate, dispatch_uid="office.groups_sync")
