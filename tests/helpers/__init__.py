"""Helpers shared by the tests of every level, imported as ``from tests.helpers.<module> import ...``.

- ``paths``: the repository root, the fixture study, the corpus.
- ``layout``: the level folders (and markers) every test lives in.
- ``studies``: real studies from the corpus, their files, manifests, ZIP entries, reference runs.
- ``aws``: the stack's resources, S3 and SQS state, S3 notifications, playing Lambda until idle.
- ``events``: what reached the notification queue, and the documented event shape.
- ``guards``: hang guards (wait on a condition, communicate with a process) that fail, never hang.
- ``processes``: ``python -m devstack poll`` as a process, /proc process trees, log lines.
- ``s3_faults``: S3 errors injected into one botocore client.
- ``codestream``, ``png``, ``report``: JPEG 2000 main headers, an independent PNG reader, CLI runs
  for the report tests.
- ``cloudformation``, ``lambda_runtime``: the packaged template's evaluator, a Lambda runtime stand-in.
- ``consumers``, ``interop_sample``: the real DICOM consumers and the corpus sample they open.

Nothing here mocks the pipeline.
"""
