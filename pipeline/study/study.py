"""A study: its objects in ZIP order, and what was seen but is not part of it.

Its own module, apart from the engine, so that planning a job (``pipeline.job.plan``) needs no
codec, pixel or encoder code: the handler imports without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pipeline.study.listing import Ignored, StudyObject, order_study, split_triggers
from pipeline.study.source import StudySource


@dataclass
class Study:
    """A study's objects in ZIP order, and what was seen but is not part of it."""

    source: StudySource
    objects: list[StudyObject]
    ignored: list[Ignored] = field(default_factory=list)

    @classmethod
    def from_source(cls, source: StudySource) -> Study:
        objects, ignored = source.list()
        objects, triggers = split_triggers(objects)
        return cls(source, order_study(objects), ignored + triggers)

    @cached_property
    def by_path(self) -> dict[str, StudyObject]:
        return {o.path: o for o in self.objects}
