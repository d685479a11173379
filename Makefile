# Developer entry points. Every target that needs Python depends on `venv`, which
# creates .venv on a fresh clone and reinstalls whenever pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv serve test bench bench-client bench-federation bench-e2ee bench-media synapse-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: venv
	$(VENV)/bin/roomactors serve --config settings.toml

# The whole suite, including the differential tests against Synapse, which must run.
test: venv synapse-venv
	ROOMACTORS_REQUIRE_SYNAPSE=1 $(PY) -m pytest -q

bench: venv
	$(PY) bench/state_res.py
	$(PY) bench/storage.py
	$(PY) bench/room_actors.py

# Client-server API load test: roomactors vs Synapse from PyPI (pinned), interleaved rounds,
# through ../shared/bench/loadgen.py. ~15 min; results in bench/results/<time>/.
# Extra args: make bench-client BENCH_CLIENT_ARGS='--rounds 3'
bench-client: venv
	$(PY) bench/client_api.py --synapse-version $(SYNAPSE_VERSION) $(BENCH_CLIENT_ARGS)

# Federation: /send throughput, joining big rooms, delivery latency; roomactors vs
# Synapse (.venv-synapse) over TLS on loopback. ~6 min; results in bench/results/<time>/.
# Extra args: make bench-federation BENCH_FEDERATION_ARGS='--quick'
bench-federation: venv synapse-venv
	$(PY) bench/federation.py $(BENCH_FEDERATION_ARGS)

# E2EE: to-device delivered/s and /keys/query for 100 users; roomactors vs Synapse
# (.venv-synapse), each a separate process on loopback. ~3 min; results in bench/results/<time>/.
# Extra args: make bench-e2ee BENCH_E2EE_ARGS='--quick'
bench-e2ee: venv synapse-venv
	$(PY) bench/e2ee.py $(BENCH_E2EE_ARGS)

# Media: thumbnails generated per second, roomactors vs Synapse (.venv-synapse,
# dynamic_thumbnails on), each a separate process on loopback. ~2 min; results in
# bench/results/<time>/. Extra args: make bench-media BENCH_MEDIA_ARGS='--images 20'
bench-media: venv synapse-venv
	$(PY) bench/media.py $(BENCH_MEDIA_ARGS)

# Synapse, the reference homeserver, in its own venv so .venv stays clean. It is the
# oracle for tests/interop/test_synapse_differential.py (see tests/interop/synapse_oracle.py).
# Pinned exactly: a new Synapse release is a deliberate bump, never a silent change.
SYNAPSE_VERSION := 1.163.2
SYNAPSE_VENV    := .venv-synapse
SYNAPSE_STAMP   := $(SYNAPSE_VENV)/.installed-$(SYNAPSE_VERSION)

synapse-venv: $(SYNAPSE_STAMP)

$(SYNAPSE_STAMP):
	test -x $(SYNAPSE_VENV)/bin/python || $(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet 'matrix-synapse==$(SYNAPSE_VERSION)'
	rm -f $(SYNAPSE_VENV)/.installed-*
	touch $(SYNAPSE_STAMP)
