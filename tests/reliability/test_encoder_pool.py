"""The encoder pool never stalls: every job comes back, in order, whatever the finishing order.

Found by ``test_phi.py`` (the whole corpus as one study hung about one run in three): when
the results handed out in one pass had filled the pool's window, the pool waited for a worker
with nothing in flight, forever. Here the real ``process_files`` (forked workers, pipes,
feeder threads) runs jobs whose encode time is drawn at random (0-20 ms, seeded), so results
come back in many different orders; ``process_file`` is replaced by that timed stand-in in the
parent before the workers fork. A wait on no connection at all (which can only block forever)
is reported at once instead of hanging the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.helpers.facts import Facts
from tests.helpers.paths import ROOT

RUNS, JOBS = 8, 250

SCRIPT = textwrap.dedent("""
    import json, os, random, sys, time
    import pipeline.files.encoders as W
    from pipeline.config import CompressionSettings
    from pipeline.files.outcome import FileOutcome

    def timed(path, data, settings, codec=None):
        time.sleep(float(path.split(":")[1]))
        return FileOutcome(path=path, action="kept", bytes_in=len(data), data=data, reason="stand-in")

    W.process_file = timed  # inherited by the forked workers
    real_wait = W.wait

    def guarded_wait(conns, timeout=None):
        if not conns:
            print(json.dumps({"stalled": True}), flush=True)
            os._exit(3)
        return real_wait(conns, timeout)

    W.wait = guarded_wait
    runs = []
    for seed in range(int(sys.argv[1])):
        rng = random.Random(seed)
        jobs = [(f"f{i}:{rng.choice([0, 0, 0, 0.002, 0.02])}", b"x" * rng.randint(0, 300_000)) for i in range(int(sys.argv[2]))]
        sent = dict(jobs)
        out = [(o.path, o.data == sent[o.path]) for o in W.process_files(iter(jobs), CompressionSettings(), encoders=2)]
        runs.append(out == [(p, True) for p, _ in jobs])
    print(json.dumps({"stalled": False, "runs": runs}))
""")


def test_pool_returns_every_job_in_order_without_stalling(facts: Facts) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(RUNS), str(JOBS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    facts.setup("encoder_pool.runs", RUNS)
    facts.setup("encoder_pool.jobs_per_run", JOBS)
    facts.equal("encoder_pool.stalls", int(result["stalled"]), 0)  # a wait on no connection would hang forever
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Every job back, once, in order, byte-identical, in every run.
    facts.equal("encoder_pool.runs_in_order", sum(result["runs"]), RUNS)
