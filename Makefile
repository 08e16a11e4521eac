# The two commands of the README: `make run` and `make test`. Both set up what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# redis-server: the broker and channel layer when none is reachable; chromium: the browser tests;
# tesseract: text repair's OCR; the font families: what text repair can match lettering with.
SYSTEM_PACKAGES := redis-server chromium tesseract-ocr tesseract-ocr-eng fonts-dejavu-core fonts-liberation fonts-noto-core

.PHONY: run test setup system-packages lint bench screenshots

run: setup
	$(BIN)/python manage.py runstack

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every figure of the README's Performance section; each script prints one line and writes
# bench/results/<name>.json. BENCH_ARGS=--quick for a short run.
BENCHMARKS := overhead strength memory latency web_load uploads region text_repair gpu
bench: setup
	@for name in $(BENCHMARKS); do $(BIN)/python -m bench.$$name $(BENCH_ARGS) || exit 1; done

# The README's screenshots: every page in the light and the dark theme, taken by the browser tests
# (test-artifacts/page-*.png, which also check that each is legible) and kept as WebP in static/screenshots/.
screenshots: setup
	$(BIN)/python -m pytest imagegen/tests/test_browser_pages.py -q $(PYTEST_ARGS)
	mkdir -p static/screenshots
	$(BIN)/python -c "import pathlib, PIL.Image as I; [I.open(p).convert('RGB').save(f'static/screenshots/{p.stem[5:]}.webp', quality=75, method=6) for p in sorted(pathlib.Path('test-artifacts').glob('page-*.png'))]"

lint: setup
	$(BIN)/ruff check .

setup: system-packages $(VENV)/.installed

# Installs missing Debian/Ubuntu packages when root; otherwise prints the command to run.
system-packages:
	@command -v dpkg >/dev/null || { echo "Not Debian/Ubuntu: install $(SYSTEM_PACKAGES) yourself."; exit 0; }; \
	missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "Missing system packages. Run: sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

# Reinstalled only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@
