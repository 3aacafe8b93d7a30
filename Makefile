# The README's commands: `make demo` (the main job on the embedded local stack) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tools lint test demo bench reliability clean awscli-install

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## Independent DICOM tools the tests decode with (Debian's GDCM), independent ZIP readers (unzip, bsdtar, 7-Zip), curl for the README's
## presigned-upload loop (tests/e2e/test_presign.py), the browser the quality report is rendered in
## (Debian's Chromium, headless; its fonts), and the consumers of tests/interop/ (Orthanc with its
## GDCM plugin, DCMTK, dicom3tools, OpenJPEG's tools); each installed when missing.
tools:
	@{ command -v gdcmconv && command -v unzip && command -v bsdtar && command -v curl \
	  && { command -v 7z || command -v 7zz; }; } >/dev/null 2>&1 || { \
	  echo "installing GDCM (Debian libgdcm-tools) for the independent decoder checks, curl, and the ZIP readers (unzip, bsdtar, 7-Zip)"; \
	  (apt-get update -qq && apt-get install -y -qq libgdcm-tools unzip libarchive-tools curl 7zip) >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian chromium) for the quality report's browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation fonts-dejavu-core) >/dev/null; }
	@{ command -v Orthanc && command -v dcmdump && command -v dciodvfy && command -v opj_decompress \
	  && test -e /usr/share/orthanc/plugins/libOrthancGdcm.so; } >/dev/null 2>&1 || { \
	  echo "installing the interoperability consumers (orthanc, orthanc-gdcm, dcmtk, dicom3tools, libopenjp2-tools)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-gdcm dcmtk \
	    dicom3tools libopenjp2-tools) >/dev/null; }

## The real AWS CLI (PyPI awscli), in a venv of its own (it pins botocore): tests run the commands
## the local stack prints with it, verbatim (tests/e2e/test_local_cli_commands.py).
AWSCLI_VENV := .venv-awscli
AWSCLI_STAMP := $(AWSCLI_VENV)/.installed
$(AWSCLI_STAMP):
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/pip install --quiet 'awscli>=1.33,<2'
	touch $(AWSCLI_STAMP)

awscli-install: $(AWSCLI_STAMP)

## Lint, format check and types (configuration: pyproject.toml). All three run; any failure fails.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

# checkov-install (deploy.mk): the scanner tests/deploy/test_checkov.py runs, in .venv-checkov.
# lint first: CI runs `make test`.
test: lint $(STAMP) tools checkov-install awscli-install
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m devstack demo

bench: $(STAMP)
	cd bench/dcmjs && npm ci --no-audit --no-fund --silent
	$(PY) -m bench
	$(PY) -m bench.large

## RELIABILITY.md from this run of tests/reliability: the tests record what they measured (each
## figure through the assertion that checks it, tests/helpers/facts.py) in $(RELIABILITY_FACTS_FILE),
## then scripts/reliability_report.py renders it. A red run rewrites nothing. The CI-sized fuzzing is
## derandomized, so a second run differs only in the figures marked as varying, timings, date, commit.
RELIABILITY_FACTS_FILE := .reliability/facts.json
reliability: $(STAMP)
	rm -f $(RELIABILITY_FACTS_FILE)
	RELIABILITY_FACTS=$(RELIABILITY_FACTS_FILE) $(PY) -m pytest -q tests/reliability
	$(PY) -m scripts.reliability_report $(RELIABILITY_FACTS_FILE) RELIABILITY.md

clean:
	rm -rf $(VENV) .venv-checkov $(AWSCLI_VENV) build .pytest_cache .mypy_cache .ruff_cache .reliability

-include deploy.mk
