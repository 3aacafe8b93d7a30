"""The study job behind a trigger: idempotent, locked, heart-beating, and explicit about failure.

Flow (:func:`pipeline.job.run.run_trigger`): manifest -> plan (listing complete? keys,
fingerprint, time estimate) -> done already? -> lock -> compress into a multipart upload ->
result record (last) -> event. One concern a module: ``config`` (the environment), ``plan``
(what is asked, frozen), ``store`` (S3 reads and writes of manifests and records), ``lock``
(the conditional-PUT lock), ``deadline`` (the time guard), ``heartbeat`` (progress), ``run``.
"""
