# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates its own virtualenv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg setup.py | sha256sum | cut -c1-12)

.PHONY: demo test lint typecheck unit bench soak kube-testenv clean

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/token-refresher demo

lint: $(STAMP)
	$(BIN)/ruff check refresher tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when a selection collects nothing; that is not a failure here.
test: lint typecheck
	$(BIN)/python -m pytest -m "not soak" ; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,demo,bench]'
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m pytest tests/soak -m soak -s ; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
