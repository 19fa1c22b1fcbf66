# Two commands set everything up: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ibwidget-installed

.PHONY: venv demo test lint bench clean

# The torch set: `full` (requirements/torch-full.txt: torch + torchvision, about 6.5 GB in .venv) where the disk has
# FULL_TORCH_MB free, else `cpu` (requirements/torch-cpu.txt: torch's CPU build, no torchvision, about 2.5 GB in
# .venv; the MNIST/CIFAR-10 tests then skip, naming the set). `make TORCH_SET=cpu` or `TORCH_SET=full` chooses.
FULL_TORCH_MB ?= 10000
ifndef TORCH_SET
TORCH_SET := $(shell avail=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	[ "$${avail:-0}" -ge $(FULL_TORCH_MB) ] && echo full || echo cpu)
endif
PIP := $(BIN)/python -m pip install -q --no-cache-dir

$(STAMP): pyproject.toml requirements/torch-full.txt requirements/torch-cpu.txt requirements/dev-extra.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "venv: torch set '$(TORCH_SET)' ($$(df -Pm . | awk 'NR==2 {print $$4}') MB free; full needs $(FULL_TORCH_MB))"
	$(PIP) --upgrade pip
	$(PIP) -r requirements/torch-$(TORCH_SET).txt
	$(PIP) -c requirements/torch-$(TORCH_SET).txt -e '.[dev]'
	$(PIP) --no-deps -r requirements/dev-extra.txt
	echo $(TORCH_SET) > $(VENV)/.ibwidget-torch-set
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check ibwidget ibwidget_jupyter tests benchmarks notebooks docs hatch_build.py
	$(BIN)/ruff format --check ibwidget ibwidget_jupyter tests benchmarks notebooks docs hatch_build.py
	$(BIN)/mypy

test: lint browser-deps js-test labextension
	$(BIN)/python -m pytest -q
	@$(MAKE) --no-print-directory test-oldest

# The JupyterLab extension in the oldest JupyterLab and Notebook it supports (requirements/jupyter-oldest.txt): an
# environment of their own that reads everything else (torch, pytest, playwright, ibwidget) from .venv, where the
# extension's browser tests run again. Skipped, saying so, where the extension could not be built.
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.ibwidget-installed
.PHONY: test-oldest
test-oldest:
	@if [ -f $(LABEXT)/package.json ]; then \
		$(MAKE) --no-print-directory $(OLDEST_STAMP) && \
		$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider tests/browser/test_lab_extension.py; \
	else \
		echo "test-oldest: the JupyterLab extension is not built (no npm); skipping its tests in JupyterLab 4.0"; \
	fi

$(OLDEST_STAMP): requirements/jupyter-oldest.txt $(STAMP)
	rm -rf $(OLDEST)
	$(BIN)/python -m venv --without-pip $(OLDEST)
	$(OLDEST)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > $(OLDEST)/.site
	echo "import site; site.addsitedir('$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")')" \
		> $$(cat $(OLDEST)/.site)/ibwidget-main-venv.pth
	$(BIN)/python -m pip --python $(OLDEST)/bin/python install -q --no-cache-dir --ignore-installed -r requirements/jupyter-oldest.txt
	mkdir -p $(OLDEST)/share/jupyter/labextensions $(OLDEST)/etc/jupyter/jupyter_server_config.d
	for ext in @jupyter-widgets bqplot bqscales anywidget; do \
		ln -sfn $(abspath $(VENV))/share/jupyter/labextensions/$$ext $(OLDEST)/share/jupyter/labextensions/$$ext; done
	ln -sfn $(abspath $(LABEXT)) $(OLDEST)/share/jupyter/labextensions/ibwidget
	cp jupyter-config/jupyter_server_config.d/ibwidget.json $(OLDEST)/etc/jupyter/jupyter_server_config.d/
	touch $@

# The JupyterLab extension (js/lab + js/planeview.js) built into ibwidget_jupyter/labextension and linked into the
# venv's share/jupyter/labextensions/ibwidget, as `jupyter labextension develop` would. Needs node and npm (and the
# npm registry once, for js/node_modules from the committed lockfile); without them it says so and skips.
LABEXT := ibwidget_jupyter/labextension
.PHONY: labextension
labextension: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(LABEXT)/package.json && \
		mkdir -p $(VENV)/share/jupyter/labextensions && \
		{ [ -L $(VENV)/share/jupyter/labextensions/ibwidget ] || rm -rf $(VENV)/share/jupyter/labextensions/ibwidget; } && \
		ln -sfn $(abspath $(LABEXT)) $(VENV)/share/jupyter/labextensions/ibwidget; \
	else \
		echo "labextension: node/npm are not installed; skipping the JupyterLab extension (the widgets work without it)"; \
	fi

js/node_modules/.package-lock.json: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund --loglevel=error

# js/package.json's build:prod: jupyter-builder's bundler against the oldest JupyterLab it supports (4.0.0's core
# package file, committed), so that neither 4.0 nor the current one logs a version warning about it. A wheel build
# runs the same script (hatch_build.py).
$(LABEXT)/package.json: js/node_modules/.package-lock.json js/package.json js/lab/* js/runviewer.js js/planeview.js
	cd js && npm run --silent build:prod

# Unit tests of the front-end's pure parts (js/planeview.js) with node's built-in runner; no npm packages needed.
.PHONY: js-test
js-test:
	@if command -v node >/dev/null 2>&1; then \
		node --test js/tests/*.test.mjs; \
	else \
		echo "js-test: node is not installed; skipping the JavaScript unit tests (install node >= 18 to run them)"; \
	fi

# Debian chromium for tests/browser (never `playwright install`: it downloads a browser, and there is no internet).
.PHONY: browser-deps
browser-deps:
	@if [ -x /usr/bin/chromium ]; then \
		echo "browser-deps: /usr/bin/chromium is there"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser-deps: /usr/bin/chromium is missing and needs root + apt-get; the browser tests will skip (fail under CI)"; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-dejavu-core; \
	fi

# The main job: JupyterLab on notebook 01 (notebooks/ is the root; run files land in notebooks/runs/). Nothing is
# opened: open the http://127.0.0.1:<port>/lab/tree/01_hsic_training_dynamics.ipynb?token=... URL it prints.
.PHONY: train html
DEMO_NOTEBOOK ?= 01_hsic_training_dynamics.ipynb
DEMO_RUN := notebooks/runs/digits.ibrun
demo: $(STAMP) labextension $(DEMO_RUN)
	cd notebooks && $(abspath $(BIN))/jupyter lab --no-browser --ip=127.0.0.1 --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/$(DEMO_NOTEBOOK) $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# An example run for the file browser (double-click it with the JupyterLab extension built), made once.
$(DEMO_RUN): | $(STAMP)
	$(BIN)/ibwidget train --dataset digits --epochs 20 --estimator hsic --probe 512 --out $@

# Regenerate the README's screenshot of the JupyterLab extension (docs/jupyterlab-extension.png); never run by tests.
.PHONY: screenshot
screenshot: $(STAMP) labextension $(DEMO_RUN)
	$(BIN)/python docs/screenshot.py

# Headless: train the seed model on the offline digits and print its trajectories.
train: $(STAMP)
	$(BIN)/ibwidget train --dataset digits --epochs 20 --estimator hsic --probe 512 --out runs/digits.ibrun
	$(BIN)/ibwidget info runs/digits.ibrun

# Regenerate notebooks/*.ipynb from their jupytext percent-format sources notebooks/*.py (a test checks they match).
.PHONY: notebooks
notebooks: $(STAMP)
	$(BIN)/python notebooks/_build.py

# Execute every notebook and write build/html/<name>.html with the widget state embedded (and the executed .ipynb).
html: $(STAMP)
	$(BIN)/python -m ibwidget._export notebooks/[0-9]*.ipynb --out build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_estimators.py
	$(BIN)/python benchmarks/bench_reestimate.py
	$(BIN)/python benchmarks/bench_tracking.py
	$(BIN)/python benchmarks/bench_widget.py
	$(BIN)/python benchmarks/bench_planeview.py
	$(BIN)/python benchmarks/bench_record.py
	$(BIN)/python benchmarks/bench_storage.py
	$(BIN)/python benchmarks/bench_watching.py
	$(BIN)/python benchmarks/bench_bigprobe.py
	$(BIN)/python benchmarks/bench_diagnostics.py

clean:
	rm -rf $(VENV) $(OLDEST) build dist .pytest_cache .ruff_cache .hypothesis js/node_modules $(LABEXT)
