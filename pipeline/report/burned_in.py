"""Which images may show text in their pixels, and so are not drawn into the report.

The report writes no header value, but a thumbnail shows whatever the pixels hold: the corpus's
CT dose screen carries its study ID and date, and ultrasound frames commonly carry the patient's
name. The header's Burned In Annotation cannot be trusted to say so (that dose screen says
``NO``), so the kind of image decides: a screen capture, an ultrasound image, a dose or screen
image by its Image Type, or anything marked ``YES``. Such an image is still listed and measured;
only its pixels stay out unless the caller asks for them.
"""

from __future__ import annotations

from typing import Any

#: SOP classes whose images are usually screens or carry burned-in text.
_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "a secondary capture (often a screen)",
    "1.2.840.10008.5.1.4.1.1.7.4": "a true colour secondary capture (often a screen recording)",
    "1.2.840.10008.5.1.4.1.1.6.1": "an ultrasound image",
    "1.2.840.10008.5.1.4.1.1.6.2": "an enhanced ultrasound image",
    "1.2.840.10008.5.1.4.1.1.3.1": "an ultrasound cine",
    "1.2.840.10008.5.1.4.1.1.6": "an ultrasound image",
    "1.2.840.10008.5.1.4.1.1.3": "an ultrasound cine",
}
_MODALITIES = {"US": "an ultrasound image", "DOC": "a scanned document"}
#: Image Type values that mean a screen of text (dose reports, screen saves).
_IMAGE_TYPES = ("DOSE", "SCREEN", "REPORT")


def burned_in_risk(ds: Any) -> str | None:
    """Why ``ds``'s pixels may show identifying text (a phrase free of header values), or None."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "an image marked as carrying burned-in annotation"
    kind = _CLASSES.get(str(ds.get("SOPClassUID", "")).strip())
    if kind:
        return kind
    kind = _MODALITIES.get(str(ds.get("Modality", "")).strip().upper())
    if kind:
        return kind
    image_type = ds.get("ImageType")
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    if any(marker in str(v).upper() for v in values for marker in _IMAGE_TYPES):
        return "a dose or screen image by its Image Type"
    return None
