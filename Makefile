# The two commands of the README:
#   make demo   install the device side, render a demo scene from labelled photos, sort it
#               with simulated GPIO, and summarise the sort log
#   make test   install everything the tests need (device, train and dev extras), run pytest
PYTHON ?= python3
VENV ?= .venv
TRASHNET ?= ../shared/datasets/trashnet
DEMO := build/demo

.PHONY: demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.device: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[dev,train]'
	@command -v systemd-analyze >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq systemd >/dev/null; } || echo "note: systemd-analyze missing (unit checks)"
	touch $@ $(VENV)/.device

demo: $(VENV)/.device
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(VENV)/bin/waste-sorter demo-scene --photos $(TRASHNET) --out $(DEMO)/scene.mp4 --items 12
	GPIOZERO_PIN_FACTORY=mock $(VENV)/bin/waste-sorter run --source $(DEMO)/scene.mp4 --log $(DEMO)/sort.jsonl
	$(VENV)/bin/waste-sorter logs --log $(DEMO)/sort.jsonl --summary

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.device
	$(VENV)/bin/waste-sorter bench

clean:
	rm -rf build $(VENV)
