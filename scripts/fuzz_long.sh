#!/usr/bin/env bash
# A long local fuzzing run: every property of tests/reliability/test_fuzz.py (event parser,
# manifest parser, ZIP names/order, the per-file DICOM path on mutated corpus slices) with
# FUZZ_EXAMPLES examples each instead of CI's 100-400. See RELIABILITY.md.
#
#   scripts/fuzz_long.sh                      # 20,000 examples per property
#   FUZZ_EXAMPLES=100000 scripts/fuzz_long.sh -k process_file
#
# Extra arguments go to pytest. Failing examples are kept in .hypothesis/ and replayed first
# by the next run (CI's too), so a failure found here becomes a regression test for free.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-20000}"
PYTHON="${PYTHON:-.venv/bin/python}"
echo "fuzzing with FUZZ_EXAMPLES=${FUZZ_EXAMPLES} per property"
exec "$PYTHON" -m pytest tests/reliability/test_fuzz.py -q --hypothesis-show-statistics "$@"
