"""What a trigger asks for, decided before anything is written: the plan of one study job.

Built in two frozen steps so that a failure records what was known when it happened:
:func:`target` (keys and settings, from the trigger and its manifest) and :func:`plan_study`
(the study's objects, checked against the manifest, and the inputs' fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from pipeline.config import CompressionSettings
from pipeline.job.config import ServiceConfig
from pipeline.job.errors import RetryLater, StudyFailed
from pipeline.study.listing import Ignored, StudyObject, order_study, split_triggers
from pipeline.study.manifest import Manifest, ManifestError
from pipeline.study.s3source import S3StudySource
from pipeline.study.study import Study
from pipeline.trigger.events import StudyTrigger


@dataclass(frozen=True)
class Target:
    """Where a trigger's outputs go and what is asked of them (known before the listing)."""

    trigger: StudyTrigger
    cfg: ServiceConfig
    zip_key: str
    record_key: str
    manifest: Manifest | None = None
    settings: CompressionSettings | None = None

    @property
    def study_path(self) -> str:
        return study_path(self.trigger, self.cfg)

    @property
    def lock_key(self) -> str:
        return self.zip_key + ".lock"

    @property
    def metadata(self) -> Any:
        return self.manifest.metadata if self.manifest else None

    def locations(self) -> tuple[dict[str, str], dict[str, str]]:
        study = {"bucket": self.trigger.bucket, "prefix": self.trigger.study_prefix, "marker": self.trigger.marker}
        output = {"bucket": self.cfg.target_bucket, "zipKey": self.zip_key, "recordKey": self.record_key}
        return study, output


@dataclass(frozen=True)
class StudyPlan:
    """A target with its study listed and checked: everything compression needs."""

    target: Target
    settings: CompressionSettings
    study: Study
    fingerprint: str


def study_path(trigger: StudyTrigger, cfg: ServiceConfig) -> str:
    return trigger.study_prefix[len(cfg.source_prefix) :].rstrip("/")


def output_keys(cfg: ServiceConfig, study_path: str, manifest: Manifest | None) -> tuple[str, str]:
    """ZIP and record keys under the target prefix; ``outputFilename`` stays in the same folder."""
    if manifest and manifest.output_filename:
        folder = posixpath.dirname(study_path)
        zip_key = cfg.target_prefix + (folder + "/" if folder else "") + manifest.output_filename
    else:
        zip_key = cfg.target_prefix + study_path + ".zip"
    return zip_key, zip_key[: -len(".zip")] + ".result.json"


def default_target(trigger: StudyTrigger, cfg: ServiceConfig) -> Target:
    """The target before the manifest is read (where a failure to read it is recorded)."""
    path = study_path(trigger, cfg)
    if not path:
        raise StudyFailed("InvalidTrigger", "marker is not inside a study folder")
    return Target(trigger, cfg, *output_keys(cfg, path, None))


def target(trigger: StudyTrigger, cfg: ServiceConfig, manifest: Manifest | None) -> Target:
    """The target the manifest asks for: its settings over the deployment's, its output name."""
    zip_key, record_key = output_keys(cfg, study_path(trigger, cfg), manifest)
    try:
        settings = manifest.settings(cfg.settings) if manifest else cfg.settings
    except ManifestError as exc:
        raise StudyFailed("InvalidManifest", str(exc)) from exc
    return Target(trigger, cfg, zip_key, record_key, manifest, settings)


def plan_study(s3: Any, goal: Target, *, last_attempt: bool) -> StudyPlan:
    """List the study and check it against the manifest; raises RetryLater/StudyFailed."""
    assert goal.settings is not None  # target() sets it
    manifest = goal.manifest
    checksums = {f.path: f.sha256 for f in (manifest.files or ()) if f.sha256} if manifest else {}
    source = S3StudySource(s3, goal.trigger.bucket, goal.trigger.study_prefix, checksums=checksums)
    objects, _ = source.list()
    selected, ignored, problems = select(manifest, objects)
    if problems:
        message = (
            f"study incomplete: {len(problems)} file(s) listed in manifest.json not present as listed: "
            + "; ".join(problems[:20])
        )
        if last_attempt:
            raise StudyFailed("IncompleteStudy", message[:2000], dead_letter=True)
        raise RetryLater(message[:300])
    if not selected:
        raise StudyFailed("EmptyStudy", "the study folder holds no files besides its marker")
    study = Study(source, order_study(selected), ignored)
    return StudyPlan(goal, goal.settings, study, fingerprint(selected, goal.settings, goal.zip_key))


def select(manifest: Manifest | None, objects: list[StudyObject]) -> tuple[list[StudyObject], list[Ignored], list[str]]:
    """The study's objects; with a manifest ``files`` list, exactly those (and what is missing)."""
    objects, ignored = split_triggers(objects)
    if not manifest or manifest.files is None:
        return objects, ignored, []
    by_path = {o.path: o for o in objects}
    wanted = {f.path: f for f in manifest.files}
    problems = []
    for f in manifest.files:
        obj = by_path.get(f.path)
        if obj is None:
            problems.append(f"{f.path} (missing)")
        elif obj.size != f.size:
            problems.append(f"{f.path} (size {obj.size}, manifest says {f.size})")
    extra = [Ignored(o.path, "not listed in manifest.json") for o in objects if o.path not in wanted]
    return [by_path[p] for p in wanted if p in by_path], ignored + extra, problems


def fingerprint(objects: list[StudyObject], settings: CompressionSettings | None, zip_key: str) -> str:
    """Identity of the inputs and of what is asked of them."""
    doc = {
        "objects": [(o.path, o.size, o.version) for o in sorted(objects, key=lambda o: o.path)],
        "settings": settings.fingerprint() if settings else None,
        "zipKey": zip_key,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
