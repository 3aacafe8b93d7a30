"""The tests, by level: unit, integration, e2e, reliability, deploy, interop (see tests/conftest.py)."""
