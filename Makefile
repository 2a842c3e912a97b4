# Two set-up commands (see README): `make demo` and `make test`. Each installs what it needs.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test screenshots lint fuzz topology bench bench-cli bench-gateway bench-psi bench-scoring bench-scoring-job bench-anonymous bench-joint clean

# One pip run installs both distributions of this repository, so the server's requirement on
# datazone-client is met by client/ here and never looked up on an index.
$(STAMP): pyproject.toml client/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e './client[engine]' -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/datazone demo

# the console's browser tests drive Debian's Chromium through Playwright (no browser is downloaded
# at run time), with a font that has Chinese glyphs
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
$(CHROMIUM) $(CJK_FONT):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null

test: $(STAMP) $(CHROMIUM) $(CJK_FONT)
	$(VENV)/bin/pytest -q

# the README's pictures of the console, taken by its browser tests
screenshots: $(STAMP) $(CHROMIUM) $(CJK_FONT)
	DATAZONE_SCREENSHOTS=docs/screenshots $(VENV)/bin/pytest -q tests/console -k browser

lint: $(STAMP)
	$(VENV)/bin/ruff check src client/src tests
	$(VENV)/bin/mypy

# Schemathesis against a real gateway on loopback, from its own OpenAPI document (tests/fuzz_api.py)
fuzz: $(STAMP)
	$(VENV)/bin/python tests/fuzz_api.py

# the deployment's topology on loopback (PostgreSQL 15, 2 replicas, scheduler, worker, HAProxy),
# under load with a replica killed, and the other deploy tests (HAProxy's file, the units, compose);
# needs Debian's postgresql-15 and haproxy
topology: $(STAMP)
	$(VENV)/bin/pytest -q -m 'topology or not topology' tests/deploy

bench: $(STAMP)
	$(VENV)/bin/python tests/bench_ingest.py

bench-cli: $(STAMP)
	$(VENV)/bin/python tests/bench_cli.py

bench-gateway: $(STAMP)
	$(VENV)/bin/python tests/bench_gateway.py

bench-psi: $(STAMP)
	$(VENV)/bin/python tests/bench_psi.py

bench-scoring: $(STAMP)
	$(VENV)/bin/python tests/bench_scoring.py

bench-anonymous: $(STAMP)
	$(VENV)/bin/python tests/bench_anonymous.py

bench-scoring-job: $(STAMP)
	$(VENV)/bin/python tests/bench_scoring_job.py

# joint statistics and modeling through the gateway: 100,000 sample enterprises, 30 + 10 features
bench-joint: $(STAMP)
	$(VENV)/bin/python tests/bench_joint.py

clean:
	rm -rf $(VENV)
