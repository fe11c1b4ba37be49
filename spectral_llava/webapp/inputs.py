"""What the app accepts as one image, and how an upload becomes a path the processor reads.

An upload is one GeoTIFF, several single-band files (copied into one folder, which then reads as a patch folder),
or one zip holding a patch folder, a multi-band GeoTIFF or a SAFE product. Zips are unpacked into a fresh folder
under the app's work dir with limits: no absolute paths or `..`, no links, at most `max_members` entries and
`max_unpacked_bytes` in all. Before any pixel is read the input's raster sizes are checked against the
configured pixel limit (`sentinel2_io.check_declared_size`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from spectral_llava.processing.sentinel2_io import (RASTER_EXTENSIONS, SizeLimit, canonical_band_names,
                                                    check_declared_size, check_raster_extension, detect_layout,
                                                    is_safe_product, parse_band_file_name, read_header)

REPO_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
ZIP_EXTENSION = ".zip"

# Shipped samples (repository sample data, see tests/data/README.md): label -> path relative to tests/data.
SAMPLES = {
    "EuroSAT Forest (13-band GeoTIFF, 64 px)": "eurosat-ms/Forest/Forest_1.tif",
    "EuroSAT River (13-band GeoTIFF, 64 px)": "eurosat-ms/River/River_1.tif",
    "EuroSAT Residential (13-band GeoTIFF, 64 px)": "eurosat-ms/Residential/Residential_1.tif",
    "EuroSAT AnnualCrop (13-band GeoTIFF, 64 px)": "eurosat-ms/AnnualCrop/AnnualCrop_1.tif",
    "BigEarthNet v1 patch 69_24, forest and water (band folder, 120 px)":
        "bigearthnet-v1/S2B_MSIL2A_20170924T93020_69_24",
    "BigEarthNet v1 patch 57_38, winter snow (band folder, 120 px)": "bigearthnet-v1/S2B_MSIL2A_20180204T94161_57_38",
    "reBEN v2 (band folder, 120 px)":
        "bigearthnet-v2/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43",
    "Major-TOM 0U_199R crop (band folder, 120 px, offset -1000)":
        "major-tom-s2l2a/0U/0U_199R/S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419",
    "SSL4EO-S12 L2A (band folder, 264 px = 2.6 km, EPSG:4326)": "ssl4eo-s12/s2a/0000200/20200604T054639_20200604T054831_T43RCP",
}


class InputError(ValueError):
    """An upload the app cannot turn into one image; the message names the file and says what to do."""


@dataclass(frozen=True)
class InputLimits:
    max_scene_pixels: int = 2048 * 2048  # of the finest raster, width x height
    max_unpacked_bytes: int = 2 * 1024 ** 3
    max_members: int = 10_000

    def size_limit(self) -> SizeLimit:
        """`max_scene_pixels` as the reading API's declared-size limit (13 bands of them at most)."""
        return SizeLimit(self.max_scene_pixels, 13 * self.max_scene_pixels,
                         "this server (spectral-llava app --max-scene-pixels)",
                         "use `spectral-llava map` on the command line for whole scenes")


def available_samples(data_root: Path = REPO_DATA) -> dict[str, Path]:
    """The shipped samples present in this checkout (none when the package is installed without tests/data)."""
    return {label: data_root / relative for label, relative in SAMPLES.items() if (data_root / relative).exists()}


def new_work_dir(root: str | os.PathLike, max_age_s: float = 6 * 3600) -> Path:
    """A fresh folder for one input under `root`; folders older than `max_age_s` are removed first."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > max_age_s:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root, prefix="input-"))


def resolve_upload(files, work_root: str | os.PathLike, limits: InputLimits = InputLimits()) -> Path:
    """Turn uploaded file paths into one image path (GeoTIFF file, band folder or SAFE folder) and check its size.

    files: one path or a list (what gradio's File component gives). Raises InputError with a message for the page.
    """
    paths = [Path(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else list(files or []))]
    if not paths:
        raise InputError("no file uploaded: drop a GeoTIFF, several band files or a zip, or pick a sample")
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path.name}: the upload is missing on the server; upload it again")
    items = [p.name for p in paths if p.suffix.lower() == ".json"]
    if items:
        raise InputError(f"{items[0]}: STAC items are not taken by the app (their hrefs would make the server read "
                         "any path or URL they name); map them with `spectral-llava map ITEM --model DIR --output "
                         "OUT` on your own machine")
    zips = [p for p in paths if p.suffix.lower() == ZIP_EXTENSION]
    for path in paths:  # a PNG, a JPEG...: the reader's own message, as on the command line
        if path.suffix.lower() not in RASTER_EXTENSIONS + (ZIP_EXTENSION,):
            try:
                check_raster_extension(str(path))
            except ValueError as err:
                raise InputError(str(err)) from err
    if zips:
        if len(paths) > 1:
            raise InputError(f"{zips[0].name}: upload a zip on its own, not together with other files")
        folder = new_work_dir(work_root)
        safe_extract_zip(zips[0], folder, limits)
        source = find_image(folder, zips[0].name)
    elif len(paths) == 1:
        source = paths[0]
    else:
        source = gather_band_files(paths, new_work_dir(work_root))
    check_size(source, limits)
    return source


def gather_band_files(paths: list[Path], work_dir: Path) -> Path:
    """Copy several single-band files into one folder, which the reader then treats as a band folder; the folder is
    named after the files' common prefix (`<patch>` of `<patch>_B02.tif`), else `bands`. Band names are read as the
    reader reads them (`parse_band_file_name`: B2.tif and B02.tif are both B02)."""
    seen: dict[str, str] = {}
    prefixes = set()
    for path in paths:
        parsed = parse_band_file_name(path.name)
        if parsed is None:
            raise InputError(f"{path.name}: several files were uploaded, so each must be one band named like "
                             "B02.tif, <patch>_B8A.tif or T33UUU_20170216T102101_B02.jp2")
        if parsed.band in seen:
            raise InputError(f"band {parsed.band} uploaded twice: {seen[parsed.band]} and {path.name}")
        seen[parsed.band] = path.name
        prefixes.add(parsed.prefix)
    prefix = prefixes.pop() if len(prefixes) == 1 else ""
    folder = work_dir / (prefix or "bands")
    folder.mkdir()
    for path in paths:
        shutil.copyfile(path, folder / path.name)
    return folder


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 100_000 else f"{num_bytes:,} bytes"


def _member_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_extract_zip(archive: Path, destination: Path, limits: InputLimits = InputLimits()) -> None:
    """Unpack `archive` into `destination`, refusing anything that would land outside it or exceed the limits."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if len(members) > limits.max_members:
                raise InputError(f"{archive.name}: {len(members)} entries, more than the limit of {limits.max_members}")
            declared = sum(member.file_size for member in members)
            if declared > limits.max_unpacked_bytes:
                raise InputError(f"{archive.name}: unpacks to {_size(declared)}, over the limit of "
                                 f"{_size(limits.max_unpacked_bytes)}")
            root = destination.resolve()
            written = 0
            for member in members:
                name = PurePosixPath(member.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", member.filename):
                    raise InputError(f"{archive.name}: entry {member.filename!r} points outside the archive; refused")
                if _member_is_link(member):
                    raise InputError(f"{archive.name}: entry {member.filename!r} is a symbolic link; refused")
                target = (root / Path(*name.parts)).resolve() if name.parts else root
                if target != root and root not in target.parents:
                    raise InputError(f"{archive.name}: entry {member.filename!r} points outside the archive; refused")
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "xb") as out:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:
                            raise InputError(f"{archive.name}: unpacks to more than the limit of "
                                             f"{_size(limits.max_unpacked_bytes)}")
                        out.write(chunk)
    except (zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{archive.name}: not a readable zip archive ({err})") from err
    except FileExistsError as err:
        raise InputError(f"{archive.name}: entry {os.path.basename(err.filename)!r} appears twice; refused") from err


def find_image(folder: Path, archive_name: str) -> Path:
    """The one image inside an unpacked zip: a SAFE product (a `.SAFE` folder or the folder holding `GRANULE`), else
    one granule's `IMG_DATA` folder, else the one folder holding band files, else the one GeoTIFF."""
    folders = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    products = [p for p in folders if is_safe_product(p)]
    if len(products) > 1:
        raise InputError(f"{archive_name} holds {len(products)} SAFE products; zip one product")
    if products:
        return products[0]
    img_data = [p for p in folders if p.name == "IMG_DATA"]
    if len(img_data) == 1:
        return img_data[0]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_EXTENSIONS)
    band_folders = sorted({p.parent for p in files if parse_band_file_name(p.name)})
    if len(band_folders) == 1:
        return band_folders[0]
    if len(band_folders) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in band_folders[:4])
        raise InputError(f"{archive_name} holds band files in {len(band_folders)} folders ({names}...); "
                         "zip one patch folder or one SAFE product")
    if len(files) == 1:
        return files[0]
    if files:
        raise InputError(f"{archive_name} holds {len(files)} GeoTIFFs that are not named by band; zip one image")
    raise InputError(f"{archive_name} holds no GeoTIFF, JPEG2000 band file or SAFE product")


def image_files(source: Path) -> dict[str, Path]:
    """The raster files the reader reads for an image path ({band: file}; {"*": file} for one multi-band file), from
    `detect_layout`; a folder the reader cannot read is an InputError with the reader's message."""
    try:
        layout = detect_layout(source)
    except (ValueError, FileNotFoundError) as err:
        raise InputError(str(err)) from err
    if layout.kind == "file":
        return {"*": Path(layout.path)}
    return {band: Path(file) for band, file in layout.files.items()}


def check_size(source: Path, limits: InputLimits) -> None:
    """Refuse an input whose largest raster exceeds `limits.max_scene_pixels` (`check_declared_size` on the headers,
    before any pixel is read); messages name the file without the server's folders."""
    for path in image_files(source).values():
        try:
            header = read_header(path)
        except ValueError as err:  # the reader's message names the file
            raise InputError(str(err)) from err
        try:
            check_declared_size(replace(header, path=path.name), limits.size_limit())
        except ValueError as err:
            raise InputError(str(err)) from None


def name_bands(source: Path, band_names: str, work_root: str | os.PathLike) -> Path:
    """A copy of the multi-band GeoTIFF `source` whose band descriptions are `band_names` ("B02,B03,B04", in file
    order), so that every reader of the app (description, answers, map) takes them as the file's bands."""
    import rasterio
    import rasterio.shutil

    try:
        names = canonical_band_names([part.strip() for part in band_names.split(",") if part.strip()],
                                     argument="band names")
    except ValueError as err:
        raise InputError(f"band names {band_names.strip()!r}: {err}") from err
    if not source.is_file():
        raise InputError(f"band names are for one multi-band GeoTIFF, but {source.name} is a folder of band files "
                         "whose file names give the bands; clear the band names field")
    count = read_header(source).count
    if count != len(names):
        raise InputError(f"band names: {len(names)} names ({', '.join(names)}) for the {count} bands of {source.name}")
    target = new_work_dir(work_root) / f"{source.stem}.tif"
    rasterio.shutil.copy(str(source), str(target), driver="GTiff")
    with rasterio.open(target, "r+") as named:
        for index, name in enumerate(names, start=1):
            named.set_band_description(index, name)
    return target
