# Every target sets up its own virtualenv; nothing needs installing by hand.
VENV      ?= .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
DEMO      ?= $(CURDIR)/.demo
# dg finds the project's virtualenv through VIRTUAL_ENV (no warning, no activation needed).
DG        := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg
DEMO_ENV  := DAGSTER_HOME=$(DEMO)/dagster_home \
             KOTOMI_DB_PATH=$(DEMO)/kotomi.db \
             KOTOMI_BACKUP_URL=$(DEMO)/backups \
             KOTOMI_BACKUP_STAGING_DIR=$(DEMO)/staging

.PHONY: setup system-deps demo dev check test test-deploy lock-image settings-table lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,test,bench]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests use (zstd, age, sqlite3, restic, PostgreSQL, Chromium; Docker's
# engine, docker-compose and debootstrap for the deployment test), installed when missing,
# LocalStack's S3 in a Python 3.13 virtualenv of its own (.venv-localstack), and PostgreSQL
# started for the end-to-end test.
system-deps:
	@scripts/install-system-deps.sh
	@scripts/install-localstack.sh
	@scripts/install-docker.sh
	@scripts/start-postgres.sh

$(DEMO)/dagster_home/dagster.yaml: dagster_home/dagster.yaml
	mkdir -p $(DEMO)/dagster_home
	cp dagster_home/dagster.yaml $@

# Make a demo Kotomi database, run the backup job once on local disk, show the result. The run
# is made as the UI's Launch makes it (defs/launch.py), so `make dev` shows it on the job's page.
demo: $(STAMP) $(DEMO)/dagster_home/dagster.yaml
	$(BIN)/kotomi-backup demo --dir $(DEMO) --db-only
	$(DEMO_ENV) $(BIN)/python -m kotomi_backup_dagster.defs.launch kotomi_backup
	$(DEMO_ENV) $(BIN)/kotomi-backup list
	@echo
	@echo "Backups are in $(DEMO)/backups/kotomi/<backup_id>/ (manifest.json + kotomi.db.zst)."
	@echo "Open the Dagster UI with 'make dev', then http://127.0.0.1:3000 (runs, assets, checks)."

# The Dagster UI and the daemon (schedules, sensors, run queue), on the demo setup.
dev: $(STAMP) $(DEMO)/dagster_home/dagster.yaml
	$(DEMO_ENV) $(DG) dev -h 127.0.0.1 -p 3000

# Load the code location as Dagster does and check every definition (bad settings fail here).
check: $(STAMP)
	$(DG) check defs

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy kotomi_backup_dagster
	$(BIN)/python -m pytest -q

# The deployment test alone: its own dockerd, the images, docker-compose.yml run for real.
test-deploy: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m deploy

# Regenerate deploy/constraints.txt, the image's pinned dependency set.
lock-image:
	scripts/lock-image-deps.sh

# Rewrite README's Configure table from the settings table (engine/config.py); a test fails
# while they differ.
settings-table: $(STAMP)
	$(BIN)/python scripts/settings-table.py

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
