# Packaging and deployment with the Serverless Framework v3 (osls fork), see serverless.yml.
# Included from the main Makefile (`include deploy.mk`) or used alone:
#
#   make -f deploy.mk package                 # arm64 (default), offline, no AWS account
#   make -f deploy.mk package ARCH=x86_64
#   make -f deploy.mk package-all             # both, one after the other
#   make -f deploy.mk deploy STAGE=prod       # real AWS credentials needed; never in CI
#   make -f deploy.mk package-clean
#   make -f deploy.mk checkov                 # package, then scan the template as a reviewer would
#
# Output: build/package/$(ARCH)/{dicom-compression.zip, cloudformation-template-*.json,
# serverless-state.json}. `package` lints the template with cfn-lint and prints the
# artifact's zipped and unzipped size.

DEPLOY_MK := $(lastword $(MAKEFILE_LIST))
# Included first or last, this file never changes the including Makefile's default goal.
_DEPLOY_SAVED_DEFAULT_GOAL := $(.DEFAULT_GOAL)

STAGE ?= dev
ARCH ?= arm64
REGION ?= us-east-1
SERVICE_NAME := dicom-compression
SLS_PACKAGE_DIR = build/package/$(ARCH)
SLS_ARTIFACT = $(SLS_PACKAGE_DIR)/$(SERVICE_NAME).zip
SLS_TEMPLATE = $(SLS_PACKAGE_DIR)/cloudformation-template-update-stack.json

DEPLOY_PY := .venv/bin/python
DEPLOY_PIP := .venv/bin/pip
CFN_LINT := .venv/bin/cfn-lint
CFN_LINT_VERSION := 1.58.0
NPM_STAMP := node_modules/.deploy-npm-ci.stamp
# checkov pins dozens of packages (boto3, jsonschema, ...) that conflict with the project's:
# it gets a venv of its own. tests/deploy/test_checkov.py runs it on the packaged templates.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
# Offline: no Prisma Cloud guideline download, no PyPI update check.
CHECKOV_ENV := BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true
SLS := npx --no-install sls

# Packaging never talks to AWS: dummy credentials, no config/credential files, a fixed
# region; the framework's own telemetry/notifications off. pip (PyPI) is the only network.
SLS_OFFLINE_ENV := \
	AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing \
	AWS_SECURITY_TOKEN=testing AWS_REGION=$(REGION) AWS_DEFAULT_REGION=$(REGION) \
	AWS_PROFILE= AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
	AWS_EC2_METADATA_DISABLED=true SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off \
	SLS_PYTHON_BIN=$(abspath $(DEPLOY_PY))

.PHONY: package package-all package-clean deploy checkov checkov-install

# `npm ci` when node_modules is missing or older than the lock file.
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(CFN_LINT):
	$(DEPLOY_PIP) install --quiet 'cfn-lint==$(CFN_LINT_VERSION)'

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(or $(PYTHON),python3) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

checkov-install: $(CHECKOV_STAMP)

# Every finding is either fixed or skipped in serverless.yml with a one-line reason.
checkov: package $(CHECKOV_STAMP)
	env $(CHECKOV_ENV) $(CHECKOV) -f $(SLS_TEMPLATE) --framework cloudformation --skip-download --compact --quiet

package: $(NPM_STAMP) $(CFN_LINT)
	@case "$(ARCH)" in arm64|x86_64) ;; *) echo "ARCH must be arm64 or x86_64, got '$(ARCH)'" >&2; exit 2;; esac
	@test -x $(DEPLOY_PY) || { echo "missing $(DEPLOY_PY): create the venv first" >&2; exit 2; }
	rm -rf .serverless $(SLS_PACKAGE_DIR)
	@start=$$(date +%s); \
	set -x; env $(SLS_OFFLINE_ENV) $(SLS) package --stage $(STAGE) --region $(REGION) \
		--param="arch=$(ARCH)" --package $(SLS_PACKAGE_DIR) || exit $$?; \
	set +x; echo "sls package ($(ARCH)) took $$(( $$(date +%s) - start )) s"
	rm -rf .serverless $(SLS_PACKAGE_DIR)/requirements
	$(CFN_LINT) $(SLS_TEMPLATE)
	@echo "cfn-lint: $(SLS_TEMPLATE) clean"
	$(DEPLOY_PY) scripts/package/artifact_size.py $(SLS_ARTIFACT)

# Sequential on purpose: the plugin installs requirements into ./.serverless/requirements.
package-all:
	$(MAKE) -f $(DEPLOY_MK) package ARCH=arm64 STAGE=$(STAGE) REGION=$(REGION)
	$(MAKE) -f $(DEPLOY_MK) package ARCH=x86_64 STAGE=$(STAGE) REGION=$(REGION)

# For people with an AWS account (credentials in the environment or a profile):
#   make deploy STAGE=prod [ARCH=arm64] [REGION=eu-central-1]
# Deploys exactly the artifact and template that `package` built and linted.
deploy: package
	@if [ -n "$$CI" ]; then echo "refusing to deploy from CI" >&2; exit 2; fi
	@if [ "$${AWS_ACCESS_KEY_ID:-}" = testing ]; then echo "dummy credentials: refusing to deploy" >&2; exit 2; fi
	$(SLS) deploy --stage $(STAGE) --region $(REGION) --param="arch=$(ARCH)" \
		--package $(SLS_PACKAGE_DIR)

package-clean:
	rm -rf build/package .serverless

.DEFAULT_GOAL := $(_DEPLOY_SAVED_DEFAULT_GOAL)
