# make demo: (re)create .venv when missing or stale, then train the demo (configs/demo.py).
# make test: the same set-up plus the `torch` and `test` extras, then the whole test suite.
PYTHON ?= python3
VENV := .venv
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# The stamps name the Python version, so a new interpreter also rebuilds the venv.
STAMP := $(VENV)/.installed-py$(PY_VERSION)
TEST_STAMP := $(VENV)/.installed-test-py$(PY_VERSION)
REQUIREMENTS := requirements.txt requirements-torch.txt requirements-test.txt constraints.txt \
	pyproject.toml
# loadgroup: the tests of one xdist_group (a shared trained model) run on one worker.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: demo test venv venv-test clean

venv: $(STAMP)

# The demo needs no torch: a fresh machine does not download it for `make demo`.
$(STAMP): $(REQUIREMENTS)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e .
	touch $(STAMP)

venv-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[torch,test]'
	touch $(TEST_STAMP)

demo: venv
	$(VENV)/bin/python main.py --config=configs/demo.py --workdir=runs/demo

test: venv-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV)
