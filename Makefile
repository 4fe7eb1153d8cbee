# EdgeWatch build and test entry points (GNU make).
#
# `make test` is the one test command: it prepares the Python environment, the system
# packages and the local PostgreSQL server, then runs ruff, mypy and pytest. Every step
# is skipped quickly when it has nothing to do, so a second run goes straight to the checks.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.NOTPARALLEL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgewatch-installed
TYPED_PACKAGES := edge_agent firmware_sim models cloud edgewatch_demo
PYTEST_ARGS ?=
DEMO_FLEET ?= firmware_sim/fleets/demo.yaml
# What the report PDF (WeasyPrint) renders with: Pango and a font.
REPORT_PKGS := libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core

# Privileged steps run directly as root, through sudo otherwise.
SUDO := $(shell if [ "$$(id -u)" -eq 0 ]; then :; elif command -v sudo >/dev/null 2>&1; then echo sudo; else echo none; fi)

# Shell helpers shared by the recipes that need root (expanded at the top of a recipe).
define ROOT_HELPERS
apt_install() {
	if [ "$(SUDO)" = none ]; then
		echo "error: these packages are missing and installing them needs root: $$*" >&2
		echo "       install them as root:  apt-get install $$*" >&2
		exit 1
	fi
	echo "==> apt-get install $$*"
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$$@"
}
as_root() {
	if [ "$(SUDO)" = none ]; then
		echo "error: this step needs root (or sudo): $$*" >&2
		exit 1
	fi
	$(SUDO) "$$@"
}
as_postgres() {
	if [ "$$(id -u)" -eq 0 ]; then
		(cd / && runuser -u postgres -- "$$@")
	elif [ "$(SUDO)" = sudo ]; then
		(cd / && sudo -u postgres "$$@")
	else
		echo "error: this step must run as the postgres user (needs root or sudo): $$*" >&2
		exit 1
	fi
}
endef

.PHONY: help
help:
	@echo "EdgeWatch make targets:"
	echo "  test         everything: venv, system-deps, services, lint, typecheck, pytest"
	echo "  venv         create $(VENV) and install EdgeWatch with its dev extras"
	echo "  system-deps  apt-install mosquitto, influxdb, postgresql, pango and chromium when missing"
	echo "  services     start the machine's PostgreSQL and give $$(id -un) a role that may create databases"
	echo "  lint         ruff check ."
	echo "  typecheck    mypy $(TYPED_PACKAGES)"
	echo "  unit         pytest tests/unit"
	echo "  bench        run tests/bench/bench_*.py (JSON results in tests/bench/results/)"
	echo "  demo         the whole system on one machine (edgewatch-demo; ARGS=... passes options)"
	echo "  demo-sim     only the simulator: the demo fleet ($(DEMO_FLEET)) at 14400x speed"
	echo "  clean        remove caches, build output and bench results (keeps $(VENV))"
	echo "  distclean    clean, and remove $(VENV)"
	echo "Variables: PYTEST_ARGS='-k influx -x' PYTHON=python3"

# ---- Python environment ---------------------------------------------------------------

.PHONY: venv
venv: $(STAMP)
	@:

$(BIN)/python:
	@$(ROOT_HELPERS)
	if ! command -v $(PYTHON) >/dev/null 2>&1 || ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then
		apt_install python3 python3-venv
	fi
	echo "==> $(PYTHON) -m venv $(VENV)"
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes (the editable install picks up code edits).
$(STAMP): $(BIN)/python pyproject.toml
	@echo "==> installing EdgeWatch -e '.[dev,all]' into $(VENV)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,all]'
	touch $@

# ---- System packages and services -----------------------------------------------------

.PHONY: system-deps
system-deps:
	@$(ROOT_HELPERS)
	missing=()
	[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
	[ -x /usr/bin/influxd ] || missing+=(influxdb)
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
	# The report PDF (WeasyPrint) needs Pango and a font; the dashboard tests drive chromium.
	for pkg in $(REPORT_PKGS); do
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$$pkg")
	done
	[ -x /usr/bin/chromium ] || missing+=(chromium)
	if [ $${#missing[@]} -gt 0 ]; then
		apt_install "$${missing[@]}"
	else
		echo "==> system packages present: mosquitto, influxdb, postgresql, pango, chromium"
	fi

# The tests create their own database on the machine's PostgreSQL (over the unix socket,
# as the current OS user). There is no systemd here, so clusters are driven directly.
.PHONY: services
services: system-deps
	@$(ROOT_HELPERS)
	if [ -n "$${EDGEWATCH_TEST_PG_ADMIN_DSN:-}" ]; then
		echo "==> EDGEWATCH_TEST_PG_ADMIN_DSN is set: the tests use that server, the local one is left alone"
		exit 0
	fi
	port="$${PGPORT:-5432}"
	user="$$(id -un)"
	if ! command -v pg_lsclusters >/dev/null 2>&1; then
		echo "error: pg_lsclusters not found; install PostgreSQL with: make system-deps" >&2
		exit 1
	fi
	clusters="$$(pg_lsclusters --no-header)"
	if [ -z "$$clusters" ]; then
		version="$$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
		echo "==> pg_createcluster $$version main (port $$port)"
		as_root pg_createcluster --port "$$port" "$$version" main
		clusters="$$(pg_lsclusters --no-header)"
	fi
	read -r version cluster status < <(awk -v p="$$port" '$$3 == p {print $$1, $$2, $$4; exit}' <<<"$$clusters") || true
	if [ -z "$${version:-}" ]; then
		echo "error: no PostgreSQL cluster listens on port $$port; clusters here:" >&2
		echo "$$clusters" >&2
		echo "       set PGPORT to one of their ports, or EDGEWATCH_TEST_PG_ADMIN_DSN" >&2
		exit 1
	fi
	if [[ "$$status" != online* ]]; then
		echo "==> pg_ctlcluster $$version $$cluster start"
		as_root pg_ctlcluster --skip-systemctl-redirect "$$version" "$$cluster" start
	fi
	if ! psql -p "$$port" -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
		echo "==> createuser -s $$user"
		as_postgres createuser -p "$$port" -s "$$user"
	fi
	can_create="$$(psql -p "$$port" -d postgres -Atqc 'SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user')"
	if [ "$$can_create" != t ]; then
		echo "==> ALTER ROLE $$user CREATEDB"
		as_postgres psql -p "$$port" -d postgres -qc "ALTER ROLE \"$$user\" CREATEDB"
	fi
	echo "==> PostgreSQL $$version/$$cluster online on port $$port; role $$user may create databases"

# ---- Checks ---------------------------------------------------------------------------

.PHONY: test
test: venv system-deps services
	@echo "==> ruff check ."
	$(BIN)/ruff check .
	echo "==> mypy $(TYPED_PACKAGES)"
	$(BIN)/mypy $(TYPED_PACKAGES)
	echo "==> pytest $(PYTEST_ARGS)"
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: lint
lint: venv
	@echo "==> ruff check ."
	$(BIN)/ruff check .

.PHONY: typecheck
typecheck: venv
	@echo "==> mypy $(TYPED_PACKAGES)"
	$(BIN)/mypy $(TYPED_PACKAGES)

.PHONY: unit
unit: venv
	@echo "==> pytest tests/unit $(PYTEST_ARGS)"
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Benchmarks print their figures and write JSON; they are not pass/fail timing tests.
.PHONY: bench
bench: venv
	@mkdir -p tests/bench/results
	shopt -s nullglob
	benches=(tests/bench/bench_*.py)
	if [ $${#benches[@]} -eq 0 ]; then
		echo "==> no benchmarks in tests/bench/"
		exit 0
	fi
	for bench in "$${benches[@]}"; do
		echo "==> $$bench"
		$(BIN)/python "$$bench"
	done

# The demo needs no server: only what the report PDF (WeasyPrint) renders with.
.PHONY: demo-deps
demo-deps:
	@$(ROOT_HELPERS)
	missing=()
	for pkg in $(REPORT_PKGS); do
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$$pkg")
	done
	if [ $${#missing[@]} -gt 0 ]; then apt_install "$${missing[@]}"; fi

.PHONY: demo
demo: venv demo-deps
	@echo "==> edgewatch-demo: the whole system on one machine (Ctrl-C stops it; ARGS=--help lists options)"
	$(BIN)/edgewatch-demo --out out/demo $(ARGS)

.PHONY: demo-sim
demo-sim: venv
	@mkdir -p out/demo-sim
	echo "==> the demo fleet, 21 simulated days at 4 hours a second (about 2 minutes; Ctrl-C"
	echo "    stops it sooner). Faults begin on day 1; units fail from day 14, about 80 s in."
	$(BIN)/edgewatch-sim serve --fleet $(DEMO_FLEET) --speed 14400 --days 21 --status-every 5 \
		--ground-truth out/demo-sim/ground_truth.jsonl

# ---- Housekeeping ---------------------------------------------------------------------

.PHONY: clean
clean:
	@rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist ./*.egg-info tests/bench/results $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	echo "==> cleaned (kept $(VENV); 'make distclean' removes it too)"

.PHONY: distclean
distclean: clean
	@rm -rf $(VENV)
	echo "==> removed $(VENV)"
