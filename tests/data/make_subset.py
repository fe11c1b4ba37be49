"""Recreate tests/data from /work/shared/data (the project's full sample set). Kept for provenance; tests never run it."""
import os, shutil, glob
import pandas as pd, rasterio
from rasterio.windows import Window
src = "/work/shared/data"; dst = "/work/main/tests/data"
# EuroSAT: first 10 by number per class
for cls in sorted(os.listdir(f"{src}/eurosat-ms")):
    os.makedirs(f"{dst}/eurosat-ms/{cls}", exist_ok=True)
    for n in range(1, 11):
        shutil.copy2(f"{src}/eurosat-ms/{cls}/{cls}_{n}.tif", f"{dst}/eurosat-ms/{cls}/{cls}_{n}.tif")
shutil.copytree(f"{src}/bigearthnet-v1", f"{dst}/bigearthnet-v1", dirs_exist_ok=True)
v2patches = []
for d in sorted(glob.glob(f"{src}/bigearthnet-v2/*/*/")):
    rel = os.path.relpath(d, src); v2patches.append(os.path.basename(d.rstrip("/")))
    shutil.copytree(d, f"{dst}/{rel}", dirs_exist_ok=True)
v1patches = sorted(os.listdir(f"{src}/bigearthnet-v1"))
md = pd.read_parquet(f"{src}/bigearthnet-v2/metadata.parquet")
sub = md[md.patch_id.isin(v2patches) | md.s2v1_name.isin(v1patches)].reset_index(drop=True)
print(sub[["patch_id", "s2v1_name"]]); assert len(sub) == 7, len(sub)  # the snowy v1 patch 57_38 has no reBEN row
sub.to_parquet(f"{dst}/bigearthnet-v2/metadata.parquet", index=False)
ssl = f"ssl4eo-s12/s2a/0000200/20200604T054639_20200604T054831_T43RCP"
shutil.copytree(f"{src}/{ssl}", f"{dst}/{ssl}", dirs_exist_ok=True)
mt = "major-tom-s2l2a/0U/0U_199R/S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
os.makedirs(f"{dst}/{mt}", exist_ok=True)
off10, size10 = 480, 120  # multiple of 6, so the 20 m and 60 m windows fall on whole pixels
for f in sorted(glob.glob(f"{src}/{mt}/*.tif")):
    with rasterio.open(f) as ds:
        scale = round(ds.transform.a / 10.0)
        win = Window(off10 // scale, off10 // scale, size10 // scale, size10 // scale)
        data = ds.read(window=win)
        prof = ds.profile.copy()
        prof.update(width=data.shape[2], height=data.shape[1], transform=ds.window_transform(win))
        with rasterio.open(f"{dst}/{mt}/{os.path.basename(f)}", "w", **prof) as out:
            out.write(data)
            out.descriptions = ds.descriptions
os.makedirs(f"{dst}/sentinel2-safe-metadata", exist_ok=True)
shutil.copy2(f"{src}/sentinel2-safe-metadata/MTD_MSIL2A.xml", f"{dst}/sentinel2-safe-metadata/MTD_MSIL2A.xml")
