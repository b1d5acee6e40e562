# Everyday verbs. `make run` and `make test` are the README's two commands.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
FLASK   := $(BIN)/flask --app wsgi
export TZ := UTC

.PHONY: run run-postgres test schema lint clean postman postman-examples bench bench-grant bench-grant-plan vendor-docs

# The runtime set (requirements.txt) plus the development tools (requirements-dev.txt).
$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

## run: the whole stack (web :8000, worker, scheduler) on the embedded defaults: SQLite in
## instance/ and a local Redis it starts itself (scripts/local_stack.py says how)
run: $(BIN)/.installed .env
	$(BIN)/python scripts/local_stack.py

## run-postgres: the same stack on a throwaway local PostgreSQL cluster (needs the PostgreSQL
## server binaries, e.g. apt-get install postgresql); its data is removed at the stop
run-postgres: $(BIN)/.installed .env
	$(BIN)/python scripts/local_stack.py --postgres

# A random local JWT secret, made once (the app refuses to start without a real one);
# production sets JWT_SECRET_KEY in its environment instead.
.env:
	echo "JWT_SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(48))')" > $@

## test: the whole suite against SQLite and a throwaway real PostgreSQL it starts itself
test: $(BIN)/.installed postman/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# newman (pinned in postman/package-lock.json) runs the Postman collection in the tests.
postman/node_modules/.installed: postman/package-lock.json
	npm ci --prefix postman --no-audit --no-fund --silent
	touch $@

## postman: run the collection against a running service (BASE_URL, ADMIN_TOKEN; defaults:
## http://127.0.0.1:8000 and a fresh admin token from this checkout's .env)
postman: $(BIN)/.installed postman/node_modules/.installed
	postman/node_modules/.bin/newman run postman/credits.postman_collection.json \
	  -e postman/credits.postman_environment.json --env-var baseUrl=$${BASE_URL:-http://127.0.0.1:8000} \
	  --env-var adminToken=$${ADMIN_TOKEN:-$$($(FLASK) auth issue-token --role admin --sub postman 2>/dev/null)}

## postman-examples: rebuild the collection with example responses from a real-stack run
postman-examples: $(BIN)/.installed postman/node_modules/.installed
	POSTMAN_REPORT=/tmp/credits-newman.json $(BIN)/python -m pytest -q \
	  tests/test_postman.py::test_postman_collection_passes_against_the_real_stack
	$(BIN)/python postman/build_collection.py --examples /tmp/credits-newman.json

## lint: pyflakes over the code, tests and tools (unused imports and names, undefined names)
lint: $(BIN)/.installed
	$(BIN)/python -m pyflakes credits_app worker migrations tests bench scripts wsgi.py gunicorn.conf.py

## schema: regenerate schema.sql from the migrations
schema: $(BIN)/.installed
	$(BIN)/python migrations/schema_sql.py > schema.sql

clean:
	rm -rf $(VENV) instance .pytest_cache

## bench: HTTP benchmark (service vs the bare-WSGI and pgbench floors, bench/http_bench.py; BENCH_ARGS
## e.g. "--duration 15 --users 10000") then the daily grant at BENCH_GRANT_SIZES users (default 100000;
## make bench-grant runs 100k and 1M). Needs wrk (installed here with apt-get if missing).
BENCH_GRANT_SIZES ?= 100000
bench: $(BIN)/.installed
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/http_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/grant_bench.py $(BENCH_GRANT_SIZES)

## bench-grant: daily grant over 100k and 1M users on a durable throwaway PostgreSQL vs the bare-SQL floor
bench-grant: $(BIN)/.installed
	$(BIN)/python bench/grant_bench.py $(BENCH_ARGS)

## bench-grant-plan: planning a grant run for 1M dense ids and 1,000 ids spread up to 10^12 (BENCH_ARGS:
## --cases, --rev REV to plan with an older revision's code)
bench-grant-plan: $(BIN)/.installed
	$(BIN)/python bench/grant_plan_bench.py $(BENCH_ARGS)

## vendor-docs: refresh the /docs and /redoc assets in credits_app/static/vendor from npm
## (the versions pinned here; the app serves them itself, so the docs work offline)
SWAGGER_UI_VERSION := 5.35.0
REDOC_VERSION := 2.5.4
VENDOR := credits_app/static/vendor
vendor-docs:
	rm -rf /tmp/credits-vendor && mkdir -p /tmp/credits-vendor
	cd /tmp/credits-vendor && npm pack -q swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) >/dev/null
	cd /tmp/credits-vendor && for f in *.tgz; do mkdir -p "$${f%.tgz}" && tar -xzf "$$f" -C "$${f%.tgz}"; done
	for f in swagger-ui.css swagger-ui-bundle.js swagger-ui-standalone-preset.js LICENSE NOTICE; do \
	  cp /tmp/credits-vendor/swagger-ui-dist-*/package/$$f $(VENDOR)/swagger-ui/; done
	cp /tmp/credits-vendor/redoc-*/package/bundles/redoc.standalone.js /tmp/credits-vendor/redoc-*/package/LICENSE $(VENDOR)/redoc/
	sed -i 's|/\*# sourceMappingURL=.*\*/$$||; s|^//# sourceMappingURL=.*$$||' $(VENDOR)/swagger-ui/swagger-ui.css \
	  $(VENDOR)/redoc/redoc.standalone.js   # no source maps are shipped: a browser would ask for them in vain
	rm -rf /tmp/credits-vendor
