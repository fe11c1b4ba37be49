"""GEO-Bench's on-disk format: bands matched by name, labels read from the pickled attributes without unpickling."""

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from geobench_data import S2_NAMES, write_partition, write_sample

from spectral_llava.evaluation import encoder_data, geobench
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.inference.labels import BEN43_LABELS
from testing_utils import DATA


def test_band_names_map_to_sentinel2_bands_by_name():
    assert [geobench.band_of(name) for name in S2_NAMES] == [
        "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    assert geobench.band_of("label") is None and geobench.band_of("Red") is None
    assert geobench.band_of("01 - VH.Real") == "B01"  # a Sentinel-1 name reads as a band number: tasks are S2-only


def test_m_eurosat_reads_exactly_like_its_geotiff(m_eurosat):
    """m-eurosat stores the EuroSAT file order (B8A last) under ESA-order names: corrected, a sample gives the same
    pixel values as the GeoTIFF it came from; trusting the stored names swaps B8A for B09."""
    probe_set = encoder_data.geobench_set(m_eurosat)
    assert probe_set.reader == "geobench-fixed" and not probe_set.multilabel
    assert probe_set.class_names[1] == "Forest" and len(probe_set.class_names) == 10
    by_name = {item.key.split(":")[-1]: item for item in probe_set.items}
    assert [by_name[f"id_000{k}"].split for k in range(4)] == ["train", "train", "validation", "test"]
    assert [by_name[f"id_000{k}"].target for k in (0, 4, 8)] == [1, 8, 9]  # Forest, River, SeaLake
    processor = SpectralImageProcessor(image_size=32)
    bands = list(processor.band_names)
    expected = processor(os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif"))["pixel_values"]
    fixed = geobench.read_bands(by_name["id_0000"].path, bands, fix_m_eurosat=True)
    np.testing.assert_array_equal(processor(fixed, band_names=bands)["pixel_values"], expected)
    stored = geobench.read_bands(by_name["id_0000"].path, bands)
    assert not np.array_equal(stored[bands.index("B8A")], fixed[bands.index("B8A")])
    np.testing.assert_array_equal(stored[bands.index("B8A")], fixed[bands.index("B09")])
    assert encoder_data.geobench_set(m_eurosat, band_names="stored").reader == "geobench"


def test_m_bigearthnet_multi_hot_labels_and_bands(m_bigearthnet):
    probe_set = encoder_data.geobench_set(m_bigearthnet)
    assert probe_set.multilabel and probe_set.class_names == list(BEN43_LABELS) and probe_set.reader == "geobench"
    sizes = {split: len(probe_set.split(split)) for split in encoder_data.SPLITS}
    assert sizes == {"train": 4, "validation": 1, "test": 1}
    # S2A_MSIL2A_20170613T101031_87_48 (sorted first): its labels_metadata.json names these two classes
    assert [probe_set.class_names[i] for i in probe_set.items[0].target] == [
        "Non-irrigated arable land", "Land principally occupied by agriculture, with significant areas of natural "
        "vegetation"]
    assert probe_set.targets(probe_set.items).shape == (6, 43)
    bands = geobench.read_bands(probe_set.items[0].path, ["B12", "B02"])
    assert bands.shape == (2, 120, 120) and bands.dtype == np.float32


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_labels_read_from_every_pickle_protocol(tmp_path, protocol):
    band = {"02 - Blue": np.ones((4, 4), dtype=np.int16)}
    vector = np.array([0, 1, 0, 1], dtype=np.int64)
    write_sample(tmp_path / "multi.hdf5", band, vector, protocol=protocol)
    write_sample(tmp_path / "single.hdf5", band, 7, protocol=protocol)
    write_sample(tmp_path / "scalar.hdf5", band, np.int64(3), protocol=protocol)
    np.testing.assert_array_equal(geobench.read_label(tmp_path / "multi.hdf5"), vector)
    assert geobench.read_label(tmp_path / "single.hdf5") == 7
    assert geobench.read_label(tmp_path / "scalar.hdf5") == 3


class _Touch:
    """A pickled object whose unpickling would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


def test_a_malicious_pickle_is_never_run(tmp_path):
    witness = tmp_path / "unpickled"
    band = {"02 - Blue": np.ones((4, 4), dtype=np.int16)}
    with h5py.File(tmp_path / "bad-label.hdf5", "w") as file:
        file.create_dataset("02 - Blue", data=band["02 - Blue"])
        file.attrs["pickle"] = str(pickle.dumps({"label": _Touch(witness)}))
    with pytest.raises(ValueError, match="bad-label.hdf5: the label is neither an integer nor a numeric array"):
        geobench.read_label(tmp_path / "bad-label.hdf5")
    with h5py.File(tmp_path / "bad-band-info.hdf5", "w") as file:  # a hostile object beside a good label is ignored
        file.create_dataset("02 - Blue", data=band["02 - Blue"])
        file.attrs["pickle"] = str(pickle.dumps({"label": 2, "02 - Blue": {"band_info": _Touch(witness)}}))
    assert geobench.read_label(tmp_path / "bad-band-info.hdf5") == 2
    assert not witness.exists()


def test_bad_folders_and_missing_bands_are_named(tmp_path, m_eurosat):
    with pytest.raises(FileNotFoundError, match="no default_partition.json"):
        geobench.list_samples(tmp_path)
    write_partition(tmp_path, {"train": ["id_0000"], "valid": [], "test": []})
    with pytest.raises(FileNotFoundError, match="names the sample 'id_0000' but .*id_0000.hdf5 does not exist"):
        geobench.list_samples(tmp_path)
    sample = tmp_path / "id_0000.hdf5"
    write_sample(sample, {name: np.ones((4, 4), dtype=np.int16) for name in S2_NAMES if "05" not in name}, 1)
    with pytest.raises(ValueError, match=r"id_0000.hdf5: no GEO-Bench band dataset for the model's band\(s\) "
                                         r"\['B05'\]"):
        geobench.read_bands(sample, ["B04", "B05"])
    with pytest.raises(ValueError, match="m-bigearthnet labels have 10 classes, expected 43"):
        geobench.class_names_of(tmp_path / "m-bigearthnet", 10)
