"""The Celery application. Configuration comes from Django settings (CELERY_ prefix)."""

import os

from celery import Celery

import office.broker  # noqa: F401  registers the embedded `sqlite://` broker transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "office.settings")

app = Celery("roster")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
