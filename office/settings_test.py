"""Settings for the test suite: the project's settings with test defaults in the
environment. Processes the end-to-end tests start (worker, beat, sandbox) inherit both
the environment and DJANGO_SETTINGS_MODULE, so they agree with the test process."""

import os
import tempfile

# A private folder for the SQLite test database and the embedded broker, so tests never
# touch a developer's var/ (CI points DATABASE_URL / CELERY_BROKER_URL elsewhere).
os.environ.setdefault("ROSTER_VAR_DIR", tempfile.mkdtemp(prefix="roster-tests-"))
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ROSTER_FERNET_KEYS", "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs=")
# Short clocks, so that worker death and retries resolve within seconds.
os.environ.setdefault("ROSTER_WORKER_HEARTBEAT_INTERVAL", "0.5")
os.environ.setdefault("ROSTER_WORKER_STALE_AFTER", "3")
os.environ.setdefault("ROSTER_SWEEP_INTERVAL", "1")
os.environ.setdefault("ROSTER_REDISPATCH_AFTER", "30")
os.environ.setdefault("ROSTER_PROVIDER_TIMEOUT", "20")
os.environ.setdefault("ROSTER_RETRY_MAX_WAIT", "5")
os.environ.setdefault("ROSTER_BROKER_POLLING_INTERVAL", "0.05")

from office.settings import *  # noqa: F403
