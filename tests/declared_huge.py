"""Tiny raster files that declare huge rasters (200,000 x 200,000 pixels), written by the test that uses them, and
the check that a call refuses one with little memory.

- `write_sparse_geotiff`: a real tiled, compressed BigTIFF of that size with no block written (GDAL's SPARSE_OK):
  about 10 KB on disk, every header field genuine.
- `write_declared_huge_jp2`: a real 64 x 64 lossless JPEG2000 whose JP2 `ihdr` box and codestream SIZ marker (image
  and tile size) are rewritten to declare side x side pixels. GDAL's JP2OpenJPEG driver writes only by copying a
  whole source raster, so a genuine 200,000 x 200,000 file would take its full encode.
- `write_mosaic_vrt`: a 12-band VRT whose XML mosaics cells x cells small GeoTIFFs (written beside it) over
  side x side pixels.
"""

import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from spectral_llava.processing.sentinel2_io import SPECTRALGPT_BANDS

HUGE = 200_000
# Refusing a declared-huge raster must not allocate more than this (Python / numpy allocations, tracemalloc)
MAX_REFUSAL_BYTES = 32 * 2 ** 20
_TRANSFORM = Affine(10, 0, 300_000, 0, -10, 5_000_000)  # UTM 33N, 10 m pixels


def write_sparse_geotiff(path, side: int = HUGE, band_names=SPECTRALGPT_BANDS) -> Path:
    """A tiled, deflate-compressed BigTIFF of side x side pixels, one uint16 band per name (the band descriptions),
    UTM 33N at 10 m, with no pixel block written."""
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=len(band_names), dtype="uint16",
                       crs="EPSG:32633", transform=_TRANSFORM, tiled=True, blockxsize=8192, blockysize=8192,
                       compress="deflate", BIGTIFF="YES", SPARSE_OK="TRUE") as dataset:
        dataset.descriptions = tuple(band_names)
    return Path(path)


def write_declared_huge_jp2(path, side: int = HUGE) -> Path:
    """A one-band uint16 JPEG2000 (UTM 33N at 10 m) that declares side x side pixels in one tile."""
    path = Path(path)
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=_TRANSFORM, QUALITY=100, REVERSIBLE="YES") as dataset:
        dataset.write(np.full((1, 64, 64), 1000, dtype=np.uint16))
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"ihdr")  # box type, then HEIGHT and WIDTH (4 bytes each)
    struct.pack_into(">II", data, ihdr + 4, side, side)
    siz = data.index(b"\xff\x4f\xff\x51") + 2  # SOC, then the SIZ marker: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz,
    struct.pack_into(">II", data, siz + 6, side, side)  # XTsiz, YTsiz (4 bytes each after the 2-byte fields)
    struct.pack_into(">II", data, siz + 22, side, side)
    path.write_bytes(bytes(data))
    return path


def write_mosaic_vrt(path, side: int = HUGE, cells: int = 5) -> Path:
    """A VRT of side x side pixels whose 12 bands (SpectralGPT order, named in the band descriptions) each mosaic
    cells x cells 16 x 16 px GeoTIFFs written beside it, each stretched over side / cells pixels."""
    path = Path(path)
    step = side // cells
    sources = []
    for index in range(cells * cells):
        source = path.with_name(f"{path.stem}_cell{index}.tif")
        with rasterio.open(source, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint16",
                           crs="EPSG:32633", transform=_TRANSFORM) as dataset:
            dataset.write(np.full((1, 16, 16), 1000 + index, dtype=np.uint16))
        sources.append(source.name)
    bands = []
    for number, band in enumerate(SPECTRALGPT_BANDS, start=1):
        mosaic = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{name}</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="16" ySize="16"/><DstRect xOff="{index % cells * step}" '
            f'yOff="{index // cells * step}" xSize="{step}" ySize="{step}"/></SimpleSource>'
            for index, name in enumerate(sources))
        bands.append(f'<VRTRasterBand dataType="UInt16" band="{number}"><Description>{band}</Description>{mosaic}'
                     "</VRTRasterBand>")
    geotransform = ", ".join(str(value) for value in _TRANSFORM.to_gdal())
    path.write_text(f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><SRS>EPSG:32633</SRS>'
                    f"<GeoTransform>{geotransform}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return path


def lightly(call):
    """What `call()` returns, asserting that its allocations (Python and numpy, traced by tracemalloc) peaked below
    MAX_REFUSAL_BYTES."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_REFUSAL_BYTES, f"refusing allocated {peak / 2**20:.1f} MiB"
    return result


def refused_lightly(call, match: str, error=ValueError):
    """`call()` must raise `error` matching `match`, allocating little (`lightly`); returns the ExceptionInfo."""

    def refuse():
        with pytest.raises(error, match=match) as refused:
            call()
        return refused

    return lightly(refuse)


def declared(path, width: int = HUGE, height: int = HUGE) -> str:
    """The start of the refusal message naming `path` and its declared size, as a regular expression."""
    return f"{re.escape(str(path))} declares {width} x {height} pixels, over the limit of "
