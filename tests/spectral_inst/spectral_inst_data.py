"""The real samples the dataset-builder tests read (imported by name from the tests of this folder)."""

from pathlib import Path

from datasets import load_from_disk

DATA = Path(__file__).parents[1] / "data"
REBEN = DATA / "bigearthnet-v2"
PARQUET = REBEN / "metadata.parquet"
V1 = DATA / "bigearthnet-v1"
EUROSAT = DATA / "eurosat-ms"
SNOWY_V1 = "S2B_MSIL2A_20180204T94161_57_38"  # no reBEN row: labels from the 43->19 mapping


def all_rows(path):
    dataset = load_from_disk(str(path))
    return {split: dataset[split].to_list() for split in dataset}
