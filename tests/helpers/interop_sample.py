"""The corpus files the interoperability tests run on: a few per category, each chosen for what a
consumer may trip over (sign, MONOCHROME1, colour, palette, multi-frame, Enhanced MR, a mosaic)."""

from __future__ import annotations

from pipeline.config import CompressionSettings

#: corpus path -> what it stands for (the consumer table's row label).
SAMPLE = {
    "ct-series/ge-hispeed-head-tilt/01.dcm": "CT, signed 16-bit",
    "ct-series/philips-ingenuity-phantom-study/S21610/S2010/I10": "CT, 12 of 16 bits",
    "ct-series/philips-ingenuity-phantom-study/S21610/S4010/I40": "RGB secondary capture",
    "mr-series/siemens-epi-mosaic/epi_pe_ap-00001.dcm": "MR, Siemens mosaic",
    "mr-series/hitachi-anatomical-4/001.dcm": "MR, implicit VR",
    "multiframe/emri_small.dcm": "Enhanced MR, 10 frames, no functional groups",
    "multiframe/6_1.dcm": "Enhanced MR, 6 frames, functional groups",
    "multiframe/enhanced-mr-siemens-xa-3frame.dcm": "Enhanced MR (XA), 3 frames",
    "edge-cases/photometric-bitdepth/dx_image.dcm": "DX, MONOCHROME1",
    "edge-cases/photometric-bitdepth/12bitSigned_0x0F0F.dcm": "MR, signed 12-bit",
    "edge-cases/photometric-bitdepth/examples_rgb_color.dcm": "US, RGB",
    "edge-cases/photometric-bitdepth/SC_rgb_16bit.dcm": "RGB 16-bit",
    "edge-cases/photometric-bitdepth/OBXXXX1A.dcm": "US, PALETTE COLOR",
}

#: transfer syntax label -> settings (the quality floor as deployed).
SETTINGS = {
    "J2K lossless .90": CompressionSettings(mode="lossless"),
    "J2K lossy .91": CompressionSettings(),
    "HTJ2K lossless RPCL .202": CompressionSettings(mode="lossless", codec="htj2k"),
    "HTJ2K lossy .203": CompressionSettings(codec="htj2k"),
    # The other way, kept as a setting (COLOUR_TRANSFORM=true); run on the RGB files only.
    "J2K lossless .90, YBR_RCT": CompressionSettings(mode="lossless", colour_transform=True),
    "J2K lossy .91, YBR_ICT": CompressionSettings(colour_transform=True),
}
