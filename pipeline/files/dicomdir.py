"""DICOMDIRs are kept as-is; this says which of their references the compression made stale.

A DICOMDIR indexes files by SOP Instance UID and transfer syntax. Re-encoding changes the
transfer syntax of every compressed file (and the UID of lossy ones), so a viewer trusting the
index could look for the wrong thing. Rewriting it would mean recomputing its byte offsets;
we keep it byte-for-byte and say so instead.
"""

from __future__ import annotations

import posixpath

from pipeline.files.outcome import FileOutcome


def _ancestors(folder: str) -> list[str]:
    out = [folder]
    while folder:
        folder = posixpath.dirname(folder)
        out.append(folder)
    return out


def stale_directory_warnings(outcomes: list[FileOutcome]) -> list[str]:
    """One warning per DICOMDIR that references files this run re-encoded."""
    by_path = {o.path.casefold(): o for o in outcomes}
    warnings = []
    for d in outcomes:
        if not d.directory_refs:
            continue
        # Referenced File IDs are relative to the file-set root, which is the directory file's own
        # folder for a DICOMDIR but may be an ancestor (e.g. a series-level DIRFILE): try each.
        folders = _ancestors(posixpath.dirname(d.path))
        stale = uid_changed = 0
        for ref_path, uid, _ts in d.directory_refs:
            target = next(
                (
                    by_path[k]
                    for k in (posixpath.normpath(posixpath.join(f, ref_path)).casefold() for f in folders)
                    if k in by_path
                ),
                None,
            )
            if target is None or target.action != "compressed":
                continue
            stale += 1
            if uid and target.sop_instance_uid_out and target.sop_instance_uid_out != uid:
                uid_changed += 1
        if stale:
            detail = f"; {uid_changed} of them also got a new SOP Instance UID" if uid_changed else ""
            warnings.append(
                f"DICOMDIR '{d.path}' kept as-is: {stale} of its {len(d.directory_refs)} references point to "
                f"files whose transfer syntax changed{detail}"
            )
    return warnings
