"""GEO-Bench task folders written in GEO-Bench 1.0's released on-disk layout from real shipped bands: one HDF5 file
per sample (a dataset per band, named as GEO-Bench names them, and the `pickle` attribute holding the repr of a
pickled dict with the label and the per-band attributes), plus `default_partition.json`."""

import contextlib
import json
import os
import pickle
import sys
import types

import h5py
import numpy as np
import rasterio

from testing_utils import DATA

# GEO-Bench's 13 Sentinel-2 band names, ESA order
S2_NAMES = ("01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red", "05 - Vegetation Red Edge",
            "06 - Vegetation Red Edge", "07 - Vegetation Red Edge", "08 - NIR", "08A - Vegetation Red Edge",
            "09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR", "12 - SWIR")
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")


class Sentinel2:
    """Stands for geobench.dataset.Sentinel2, so that the attributes pickle as GEO-Bench's writers pickle them."""

    def __init__(self, name, alt_names=(), spatial_resolution=10, wavelength=None):
        self.name, self.alt_names = name, alt_names
        self.spatial_resolution, self.wavelength = spatial_resolution, wavelength


@contextlib.contextmanager
def geobench_classes():
    """`geobench.dataset.Sentinel2` importable while pickling (the reader never imports it)."""
    package, module = types.ModuleType("geobench"), types.ModuleType("geobench.dataset")
    module.Sentinel2, package.dataset = Sentinel2, module
    Sentinel2.__module__ = "geobench.dataset"
    saved = {name: sys.modules.get(name) for name in ("geobench", "geobench.dataset")}
    sys.modules.update({"geobench": package, "geobench.dataset": module})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
        Sentinel2.__module__ = __name__


def write_sample(path, bands: dict, label, protocol: int = 4) -> None:
    """One GEO-Bench sample file: `bands` {GEO-Bench band name: (H, W) array}, `label` an int or a 0/1 vector."""
    with geobench_classes(), h5py.File(path, "w") as file:
        attributes = {"label": label, "bands_order": list(bands)}
        for name, data in bands.items():
            file.create_dataset(name, data=data)
            attributes[name] = {"date": None, "date_id": None, "spatial_resolution": 10,
                                "band_info": Sentinel2(name), "meta_info": None, "transform": None, "crs": None}
        file.attrs["pickle"] = str(pickle.dumps(attributes, protocol=protocol))


def write_partition(root, partition: dict) -> None:
    with open(os.path.join(root, "default_partition.json"), "w") as f:
        json.dump(partition, f)


def write_m_eurosat(root, classes=("Forest", "River", "SeaLake"), per_class=4) -> str:
    """m-eurosat from the shipped EuroSAT GeoTIFFs, stored as GEO-Bench 1.0 stores them: the 13 channels in the
    EuroSAT file order (B8A last) under the ESA-order names; int16; label = EuroSAT class index. Per class: samples
    1..per_class-2 train, then one validation and one test sample."""
    os.makedirs(root, exist_ok=True)
    partition, number = {"train": [], "valid": [], "test": []}, 0
    for name in classes:
        for k in range(1, per_class + 1):
            with rasterio.open(os.path.join(DATA, "eurosat-ms", name, f"{name}_{k}.tif")) as src:
                data = src.read().astype(np.int16)
            sample = f"id_{number:04d}"
            write_sample(os.path.join(root, f"{sample}.hdf5"), dict(zip(S2_NAMES, data)), EUROSAT_CLASSES.index(name))
            split = "test" if k == per_class else "valid" if k == per_class - 1 else "train"
            partition[split].append(sample)
            number += 1
    write_partition(root, partition)
    return str(root)


def write_m_bigearthnet(root) -> str:
    """m-bigearthnet from the 6 shipped BigEarthNet v1 patches: the 12 bands (no B10) on the 120x120 10 m grid as
    float32, the 43-class multi-hot label of the patch's labels_metadata.json; 4 train, 1 validation, 1 test."""
    from spectral_llava.processing.sentinel2_io import read_image
    from spectral_llava.inference.labels import BEN43_LABELS

    os.makedirs(root, exist_ok=True)
    folder = os.path.join(DATA, "bigearthnet-v1")
    names = S2_NAMES[:10] + S2_NAMES[11:]
    bands = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    partition = {"train": [], "valid": [], "test": []}
    for number, patch in enumerate(sorted(os.listdir(folder))):
        image = read_image(os.path.join(folder, patch))
        data = image.data[[image.band_names.index(band) for band in bands]].astype(np.float32)
        with open(os.path.join(folder, patch, f"{patch}_labels_metadata.json")) as f:
            labels = json.load(f)["labels"]
        label = np.zeros(len(BEN43_LABELS), dtype=np.int64)
        label[[BEN43_LABELS.index(name) for name in labels]] = 1
        sample = f"id_{number:04d}"
        write_sample(os.path.join(root, f"{sample}.hdf5"), dict(zip(names, data)), label)
        partition["test" if number == 5 else "valid" if number == 4 else "train"].append(sample)
    write_partition(root, partition)
    return str(root)
