# sa-engine: `make job` sets up and runs the main job; `make test` sets up and runs every test.
# Both bootstrap their own virtual environment in .venv (re-made when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SA_ENGINE := $(VENV)/bin/sa-engine
STAMP := $(VENV)/.installed
SHARED_IMAGES ?= ../shared/data/images
DEMO_OUT ?= out/demo
JOB_OUT ?= out/release

.PHONY: setup browser job demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned: pip takes these two from the machine's local wheels.
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[test]'
	# SAM 2's public package, the tests' reference for SAM 2.1: built here without its CUDA extension and
	# without build isolation (an isolated build would fetch another torch).
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --no-build-isolation 'sam2==1.1.0'
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium and chromedriver, for the tests that open the HTML report in a real browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

# The main job on the embedded default: local Ray, local folders, the shipped sae_tiny model.
job: $(STAMP)
	$(SA_ENGINE) amg --input $(SHARED_IMAGES) --output $(JOB_OUT)

# The shipped sae_tiny model: the three masks for a point on the dog, and automatic masks of every photo.
demo: $(STAMP)
	$(SA_ENGINE) demo --image $(SHARED_IMAGES)/dog.jpg --output $(DEMO_OUT)/dog_point.png
	for photo in $(SHARED_IMAGES)/*.jpg; do \
		$(SA_ENGINE) demo --automatic --image $$photo --output $(DEMO_OUT)/$$(basename $$photo .jpg)_automatic.png || exit 1; \
	done

# pytest exits 5 when it collects no test; make then fails, as it should.
test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
