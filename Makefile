# Roster: `make run` starts the embedded office, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format migrations-check ci bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Roster needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

# First start writes .env with a fresh Django secret and a Fernet key for provider secrets.
.env:
	@$(PYTHON) -c 'import base64, os, secrets, pathlib; pathlib.Path(".env").write_text("DJANGO_DEBUG=true\nDJANGO_SECRET_KEY=" + secrets.token_urlsafe(50) + "\nROSTER_FERNET_KEYS=" + base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")'
	@chmod 600 .env
	@echo "wrote .env (keep it: it holds the key that encrypts provider secrets)"

run: $(STAMP) .env
	$(BIN)/python manage.py run_office

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrations-check: $(STAMP)
	DJANGO_SECRET_KEY=check ROSTER_VAR_DIR=$$(mktemp -d) $(BIN)/python manage.py makemigrations --check --dry-run

ci: lint migrations-check test

# Every benchmark against PostgreSQL and Redis (bench/run_all.py, about 15 minutes): a
# table of figures against targets, and docs/benchmarks.md's generated section rewritten.
# DATABASE_URL / CELERY_BROKER_URL override the defaults (roster_bench_* databases on
# 127.0.0.1, Redis database 12); BENCH_ARGS passes options (e.g. "--soak 60 --no-doc").
# PgBouncer (Debian's package) fronts PostgreSQL for the live benchmarks, whose 200 worker
# threads need more connections than max_connections allows.
bench: $(STAMP)
	@command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || \
		(echo "PgBouncer is missing; installing it" && apt-get update -q && apt-get install -y -q pgbouncer)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
