"""Image codecs behind one interface; :func:`codec_for` picks one from the settings."""

from __future__ import annotations

from pipeline.codec.base import CodecLimit, FrameCodec, FrameSpec
from pipeline.config import CompressionSettings

__all__ = ["CodecLimit", "FrameCodec", "FrameSpec", "codec_for"]


def codec_for(settings: CompressionSettings) -> FrameCodec:
    """The codec that implements ``settings`` (imported lazily: HTJ2K is optional)."""
    rate = None if settings.lossless else settings.rate
    if settings.codec == "htj2k":
        from pipeline.codec.htj2k import HTJ2KCodec

        return HTJ2KCodec(rate, colour_transform=settings.colour_transform)
    from pipeline.codec.j2k import J2KCodec

    return J2KCodec(rate, colour_transform=settings.colour_transform)
