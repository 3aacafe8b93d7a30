"""The local stack, for development and tests; not part of the Lambda artifact.

A moto server on 127.0.0.1 with the resources serverless.yml declares, an SQS poller that plays
the Lambda service (it calls ``handlers.worker.handler``), and the client commands a clinic or an
operator runs (submit, presign, status). It uses ``pipeline``; ``pipeline`` never imports it.
"""
