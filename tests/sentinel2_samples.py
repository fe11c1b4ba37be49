"""Real Sentinel-2 samples and the SAFE products the reader, scene and web-app tests write from them (imported as
`sentinel2_samples`; tests/ is on sys.path): the shipped crops in tests/data, the full cells in ../shared/data
(tests that need them skip without), and `write_safe_l2a` / `write_safe_l1c`, which lay real bands out as a
Level-2A / Level-1C SAFE product in JPEG2000."""

import os
import shutil

from testing_utils import DATA, REPO

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
MAJOR_TOM = os.path.join(SHARED, "major-tom-s2l2a", "0U", "0U_199R",
                         "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
MAJOR_TOM_CROP = os.path.join(DATA, "major-tom-s2l2a", "0U", "0U_199R",
                              "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419")
SAFE_MTD = os.path.join(DATA, "sentinel2-safe-metadata", "MTD_MSIL2A.xml")
# The product the shared MTD_MSIL2A.xml describes: `write_safe_l2a` lays its pixels out under the names the XML lists.
L2A_PRODUCT = "S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625"
L2A_GRANULE = "L2A_T21JUK_A035414_20231217T140918"
L2A_PREFIX = "T21JUK_20231217T135659"
NATIVE_RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20,
                     "B11": 20, "B12": 20, "B01": 60, "B09": 60}


def copy_band(source_tif, target, block=None, driver=None, **profile_updates):
    """Write the real band `source_tif` to `target` (JPEG2000 when it ends in .jp2, losslessly), optionally
    block-averaged by `block` (a SAFE product's coarser copies of a band)."""
    import rasterio
    from rasterio.transform import Affine

    with rasterio.open(source_tif) as dataset:
        data, profile = dataset.read(1), dataset.profile
    if block:
        h, w = data.shape[0] // block, data.shape[1] // block
        data = data[:h * block, :w * block].reshape(h, block, w, block).mean(axis=(1, 3)).round().astype(data.dtype)
        profile["transform"] = profile["transform"] @ Affine.scale(block)
    profile.update(height=data.shape[0], width=data.shape[1], count=1)
    if str(target).endswith(".jp2"):
        for key in ("compress", "tiled", "interleave", "blockxsize", "blockysize", "predictor"):
            profile.pop(key, None)
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    profile.update(profile_updates)
    os.makedirs(os.path.dirname(str(target)), exist_ok=True)
    with rasterio.open(target, "w", **profile) as dataset:
        dataset.write(data, 1)
    return str(target)


def write_safe_l2a(root, band_folder, with_mtd=True):
    """A Level-2A SAFE product written from the real bands of `band_folder` (Major-TOM layout, B02.tif ...): each
    band as JPEG2000 at its native resolution under R10m/R20m/R60m, plus the coarser copies a real product carries
    (R20m B02..B04, R60m B02..B12 as block means), and the shared MTD_MSIL2A.xml."""
    safe = os.path.join(str(root), f"{L2A_PRODUCT}.SAFE")
    img_data = os.path.join(safe, "GRANULE", L2A_GRANULE, "IMG_DATA")
    for band, native in NATIVE_RESOLUTION.items():
        source = os.path.join(band_folder, f"{band}.tif")
        for resolution in (10, 20, 60):
            if resolution >= native and (resolution == native or band != "B08" or resolution != 20):
                target = os.path.join(img_data, f"R{resolution}m", f"{L2A_PREFIX}_{band}_{resolution}m.jp2")
                copy_band(source, target, block=resolution // native if resolution > native else None)
    if with_mtd:
        shutil.copyfile(SAFE_MTD, os.path.join(safe, "MTD_MSIL2A.xml"))
    return safe


def write_safe_l1c(root, ssl4eo_folder, tile="T43RCP", sensing="20200823T054639"):
    """A Level-1C SAFE product (IMG_DATA/<tile>_<time>_B02.jp2 ..., B10 included) from an SSL4EO s2c sample."""
    product = f"S2A_MSIL1C_{sensing}_N0209_R105_{tile}_{sensing}.SAFE"
    img_data = os.path.join(str(root), product, "GRANULE", f"L1C_{tile}_A000000_{sensing}", "IMG_DATA")
    for name in os.listdir(ssl4eo_folder):
        if name.endswith(".tif"):
            band = name[:-4].upper()
            band = f"B{int(band[1:]):02d}" if band[1:].isdigit() else band
            copy_band(os.path.join(ssl4eo_folder, name), os.path.join(img_data, f"{tile}_{sensing}_{band}.jp2"))
    return os.path.join(str(root), product)
