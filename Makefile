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

bench: $(STAMP)
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-bench} $(BIN)/python bench/sandbox_capacity.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
