# Two commands on a fresh machine with Python 3.11+ and make: `make demo`, `make test`.
PYTHON ?= python3
# The optional dependencies installed: `make install EXTRAS=dev,postgres,spark` adds Spark.
EXTRAS ?= dev,postgres
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	echo '$(EXTRAS)' > $(STAMP)

# EXTRAS given (on the command line or in the environment) and not those of the last install:
# install again. Without it, whatever was installed is used.
ifneq ($(origin EXTRAS),file)
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(EXTRAS))
.PHONY: $(STAMP)
endif
endif

install: $(STAMP)

demo: install
	$(BIN)/flagsmith-warehouse demo

test: install lint
	$(BIN)/python -m pytest

# sqlfluff's dbt templater compiles the project: against a throwaway DuckDB file and target
# folder, so linting creates no data/warehouse.duckdb and leaves target/ alone.
lint: install
	$(BIN)/ruff check loader tests bench
	$(BIN)/ruff format --check loader tests bench
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	    FLAGSMITH_DUCKDB_PATH="$$tmp/lint.duckdb" DBT_TARGET_PATH="$$tmp/target" \
	    DBT_LOG_PATH="$$tmp/logs" $(BIN)/sqlfluff lint models analyses
	$(BIN)/mypy loader

format: install
	$(BIN)/ruff format loader tests bench
	$(BIN)/ruff check --fix loader tests bench

clean:
	rm -rf $(VENV) target logs data .pytest_cache .ruff_cache .mypy_cache
