"""Lambda entry point: SQS batch of S3 notifications -> one study job per trigger.

Thin by design: parsing, the study job and every decision live in ``pipeline``. Failed
records are reported as partial batch failures so only they are redelivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from pipeline.job.config import ServiceConfig
from pipeline.job.errors import DeadLetter, RetryLater
from pipeline.job.run import run_trigger
from pipeline.observability import logger, make_tracer
from pipeline.trigger.events import Dropped, parse_body

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

tracer = make_tracer()
metrics = Metrics()
# With batch size 1 every retry is a whole-batch failure: report it as such, not as a Lambda error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_context: dict[str, Any] = {}


def _record_metrics(record: dict[str, Any]) -> None:
    if record.get("duplicate"):
        metrics.add_metric(name="DuplicateTriggers", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(
        name="StudiesFailed" if record["status"] == "failed" else "StudiesCompressed", unit=MetricUnit.Count, value=1
    )
    totals = record.get("totals") or {}
    if totals:
        metrics.add_metric(name="Files", unit=MetricUnit.Count, value=totals["files"])
        metrics.add_metric(name="BytesIn", unit=MetricUnit.Bytes, value=totals["bytesIn"])
        metrics.add_metric(name="BytesOut", unit=MetricUnit.Bytes, value=totals["bytesOut"])
        if totals.get("ratio"):
            metrics.add_metric(name="CompressionRatio", unit=MetricUnit.NoUnit, value=totals["ratio"])
        metrics.add_metric(name="StudySeconds", unit=MetricUnit.Seconds, value=record["timings"]["total"])


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    cfg = ServiceConfig.from_env()
    receive_count = int(record.attributes.approximate_receive_count or 1)
    context = _context.get("lambda")
    remaining = (
        context.get_remaining_time_in_millis
        if context is not None and hasattr(context, "get_remaining_time_in_millis")
        else None
    )
    for item in parse_body(record.body, bucket=cfg.data_bucket, source_prefix=cfg.source_prefix):
        if isinstance(item, Dropped):
            logger.warning("message dropped", extra={"reason": item.reason, "message_id": record.message_id})
            metrics.add_metric(name="MessagesDropped", unit=MetricUnit.Count, value=1)
            continue
        logger.append_keys(study=item.study_prefix)
        try:
            result = run_trigger(item, cfg, receive_count=receive_count, remaining_ms=remaining)
        except RetryLater as exc:
            logger.info("study not ready, will retry", extra={"reason": str(exc)[:300], "attempt": receive_count})
            raise
        except DeadLetter:
            logger.warning(
                "study failed on its last attempt; its message goes to the DLQ", extra={"attempt": receive_count}
            )
            raise
        finally:
            logger.remove_keys(["study"])
        _record_metrics(result)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
# powertools types this decorator (and Metrics.log_metrics) as returning Callable[..., Any].
@tracer.capture_lambda_handler  # type: ignore[untyped-decorator]
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    _context["lambda"] = context
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
