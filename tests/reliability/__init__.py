"""Reliability tests: duplicates, kills, time limits, S3 faults, poison and hostile input, fuzzing, PHI.

Everything here runs on real parts: a moto server (``devstack.stack.RunningStack``), the
real handler driven by the real ``poll_once`` or the real ``python -m devstack poll`` process,
real DICOM from the corpus. Select with ``-m reliability`` (or the folder). ``make reliability``
runs them with the recorder on (``facts``, conftest.py) and writes RELIABILITY.md from what they
measured. The module-scoped ``stack`` fixture (moto server + resources) is in
tests/conftest.py.
"""
