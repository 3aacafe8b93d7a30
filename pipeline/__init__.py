"""DICOM study compression: event -> study -> files -> codec -> archive -> outputs -> notify.

Each step is a sub-package; :func:`pipeline.engine.compress_study` runs them in order for one
study and works on any :class:`pipeline.study.source.StudySource` (a local folder or S3).
"""

__version__ = "0.1.0"

from pipeline import gdcm_on_demand as _gdcm_on_demand

_gdcm_on_demand.install()
