"""Who wrote the file and which UIDs are ours (PS3.10 7.1, PS3.5 9): the Implementation Class UID
and Version Name of this software, and new UIDs under a configurable root.

PS3.10 says the file meta's Implementation Class UID and Version Name identify the implementation
that *wrote* the file, so every output carries ours, not the source's. New UIDs (a lossy
derivative's SOP Instance UID, the Implementation Class UID itself) are made under ``UID_ROOT``
(an organisation's registered root; pydicom's, for pydicom users, by default), deterministically:
the same root, source UID and settings give the same UID.
"""

from __future__ import annotations

import re

import pipeline

#: The root new UIDs are made under when ``UID_ROOT`` is not set: pydicom's (its PYDICOM_ROOT_UID;
#: spelled out so that the settings can import this module without importing pydicom).
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."
#: What the derived UIDs have always hashed, beside the source UID and the settings.
UID_NAMESPACE = "dicom-compression/v1"
#: A root leaves room for a 20+ digit suffix inside the 64-character UID.
_MAX_ROOT = 40
_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")
_VERSION_PREFIX = "DCMCOMP_"


def normalise_root(root: str) -> str:
    """``root`` as generate_uid takes it (ending in '.'); ValueError when it is no UID root."""
    root = root.strip()
    if root and not root.endswith("."):
        root += "."
    if not _ROOT.match(root) or len(root) > _MAX_ROOT:
        raise ValueError(f"UID_ROOT must be dotted digits without leading zeros, at most {_MAX_ROOT - 1} characters")
    return root


def derived_uid(original_uid: str, settings_fingerprint: str, root: str = DEFAULT_UID_ROOT) -> str:
    """Deterministic new UID for a lossy derivative: same root + source + settings -> same UID."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=root, entropy_srcs=[UID_NAMESPACE, original_uid, settings_fingerprint])


def implementation_class_uid(root: str = DEFAULT_UID_ROOT) -> str:
    """This software's Implementation Class UID under ``root``: the same for every version (the
    Version Name tells versions apart), different for each root."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=root, entropy_srcs=[UID_NAMESPACE, "implementation-class"])


def implementation_version_name() -> str:
    """Implementation Version Name (SH, at most 16 characters): ``DCMCOMP_`` + the version."""
    return (_VERSION_PREFIX + pipeline.__version__)[:16]
