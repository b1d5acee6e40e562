# Everyday verbs. `make run` and `make test` are the README's two commands.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
FLASK   := $(BIN)/flask --app wsgi
export TZ := UTC

.PHONY: run test schema lint clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

## run: the service on the embedded default (SQLite in instance/), migrated, on :8000
run: $(BIN)/.installed
	$(FLASK) db upgrade
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## test: the whole suite against SQLite and a throwaway real PostgreSQL it starts itself
test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## schema: regenerate schema.sql from the migrations
schema: $(BIN)/.installed
	$(BIN)/python migrations/schema_sql.py > schema.sql

clean:
	rm -rf $(VENV) instance .pytest_cache
