#!/usr/bin/env bash
# A long local fuzzing run: every property of tests/reliability/test_fuzz.py (event parser,
# manifest parser, ZIP names/order, the per-file DICOM path on mutated corpus slices) with
# FUZZ_EXAMPLES examples each instead of CI's 100-400, drawn at random (CI's are derandomized:
# the same every run). Each property prints what its cases led to. See RELIABILITY.md.
#
#   scripts/fuzz_long.sh                      # 20,000 examples per property
#   FUZZ_EXAMPLES=100000 scripts/fuzz_long.sh -k process_file
#
# Extra arguments go to pytest. Failing examples are kept in .hypothesis/ and replayed first
# by the next long run; CI's derandomized run uses no database, so add a failure found here to
# FOUND in test_fuzz.py (an explicit example) to keep it as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-20000}"
PYTHON="${PYTHON:-.venv/bin/python}"
echo "fuzzing with FUZZ_EXAMPLES=${FUZZ_EXAMPLES} per property"
exec "$PYTHON" -m pytest tests/reliability/test_fuzz.py -q -s "$@"
