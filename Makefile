# The two commands of the README:
#   make demo   install the device side, render a demo scene from labelled photos, sort it
#               with simulated GPIO, and summarise the sort log
#   make test   install everything the tests need (device, train and dev extras), run pytest
PYTHON ?= python3
VENV ?= .venv
TRASHNET ?= ../shared/datasets/trashnet
DEMO := build/demo

.PHONY: demo test test-arm64 bench scenes learn-demo train-gpu clean

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
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq chromium chromium-driver >/dev/null; } || echo "note: chromium missing (web page tests)"
	@{ [ -x /usr/sbin/mosquitto ] && [ -x /usr/bin/mosquitto_passwd ]; } || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends mosquitto >/dev/null; } || echo "note: mosquitto missing (MQTT tests)"
	touch $@ $(VENV)/.device

demo: $(VENV)/.device
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(VENV)/bin/waste-sorter demo-scene --photos $(TRASHNET) --split device/model/split.json \
		--out $(DEMO)/scene.mp4 --items 12 --all-nuisances
	$(VENV)/bin/waste-sorter run --config device/demo.toml --source $(DEMO)/scene.mp4 --log $(DEMO)/sort.jsonl
	$(VENV)/bin/waste-sorter logs --log $(DEMO)/sort.jsonl --summary
	$(VENV)/bin/waste-sorter score-scene --truth $(DEMO)/scene.truth.json --log $(DEMO)/sort.jsonl --reference

# The loop measured on long seeded scenes with every nuisance (README, "The loop"): about
# two minutes per 120-item scene on two x86 cores. MODEL=FILE.onnx sorts them with a candidate
# model instead of the shipped one (its manifest beside it), SCENES=DIR keeps its results apart.
SCENES ?= build/scenes
SEEDS ?= 1 2 3
scenes: $(VENV)/.device
	mkdir -p $(SCENES)
	for seed in $(SEEDS); do \
		$(VENV)/bin/waste-sorter demo-scene --photos $(TRASHNET) --split device/model/split.json --items 120 \
			--all-nuisances --seed $$seed --out $(SCENES)/scene-$$seed.mp4 && \
		rm -f $(SCENES)/sort-$$seed.jsonl && \
		GPIOZERO_PIN_FACTORY=mock $(VENV)/bin/waste-sorter run --source $(SCENES)/scene-$$seed.mp4 \
			$(if $(MODEL),--model $(MODEL)) --log $(SCENES)/sort-$$seed.jsonl > $(SCENES)/run-$$seed.txt 2>&1 && \
		echo "== seed $$seed" && $(VENV)/bin/waste-sorter score-scene --truth $(SCENES)/scene-$$seed.truth.json \
			--log $(SCENES)/sort-$$seed.jsonl --reference $(if $(MODEL),--model $(MODEL)) || exit 1; \
	done

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest

# Learn from the bin, measured (README): the shipped model on a warm-lit scene before and after a
# fine-tune on the captures of another scene of that board and light; about 16 minutes.
learn-demo: $(VENV)/.test
	TRASHNET=$(TRASHNET) BIN=$(VENV)/bin export/learn_demo.sh build/learn-demo

# The model's recipe on one CUDA GPU (README, "Training on GPUs"): teacher, student, export,
# quantize, evaluate --relight all, under build/train-gpu; not yet measured on a GPU.
train-gpu: $(VENV)/.test
	TRASHNET=$(TRASHNET) BIN=$(VENV)/bin export/train_gpu.sh build/train-gpu

# The arm64 lane (README, "The arm64 lane"; not part of .ci/run): the device side on Debian
# bookworm arm64 under proot + qemu-user as a Cortex-A72 and a Cortex-A76: tests, the shipped
# model at 1/2/4 threads against x86, a small scene sorted. Under build/arm64; re-runnable.
test-arm64: $(VENV)/.device
	@{ command -v debootstrap && command -v proot && command -v qemu-aarch64-static; } >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq debootstrap proot qemu-user-static >/dev/null; } || \
		{ echo "test-arm64 needs debootstrap, proot and qemu-user-static (apt-get install them)"; exit 3; }
	HOST_PYTHON=$(VENV)/bin/python TRASHNET=$(TRASHNET) .ci/arm64/run-tests.sh

# The fp32 twin (int8 speed-up) needs the onnx package of the dev extra (`make test` installs it);
# without it the bench says so and measures the rest.
bench: $(VENV)/.device
	$(VENV)/bin/waste-sorter bench

clean:
	rm -rf build $(VENV)
