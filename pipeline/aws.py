"""boto3 clients, created lazily (a client made before moto starts would talk to real AWS).

``AWS_ENDPOINT_URL`` (honoured by boto3 itself) points them at the local stack.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from botocore.config import Config

# Standard retry mode backs off on throttling (503 SlowDown) and 5xx before we ever see them.
CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32)

#: The services the pipeline and its tools talk to (boto3-stubs types ``client`` per service name).
Service = Literal["s3", "sqs", "events"]


@functools.cache
def client(service: Service) -> Any:
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    # Timestamps stay strings: nothing here reads them, and dateutil parsing every LastModified
    # was half the client-side cost of listing a 400-file study.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return boto3.session.Session(botocore_session=core).client(service, config=CLIENT_CONFIG)


def reset_clients() -> None:
    """Forget cached clients (tests switching endpoints)."""
    client.cache_clear()


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying later: throttling, 5xx, connection trouble."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ReadTimeoutError

    if isinstance(exc, (BotoConnectionError, ReadTimeoutError)):
        return True
    code = error_code(exc)
    return http_status(exc) >= 500 or code in {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
