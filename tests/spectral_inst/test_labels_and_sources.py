"""The label contract, dates, seasons, the 43 -> 19 class mapping and the seeded splits."""

import pandas as pd
import pytest

from spectral_llava.inference import BEN19_LABELS, format_labels, parse_labels
from spectral_llava.spectral_inst import (load_reben_metadata, parse_acquisition_date, season_of, stratified_split,
                                          trim_to_sentence)
from spectral_llava.spectral_inst import sources
from spectral_inst_data import PARQUET, V1


def test_format_and_parse_labels_round_trip_with_commas_in_names():
    labels = ["Transitional woodland, shrub", "Arable land",
              "Land principally occupied by agriculture, with significant areas of natural vegetation"]
    text = format_labels(labels)
    assert text == ("Labels: Arable land; Land principally occupied by agriculture, with significant areas of "
                    "natural vegetation; Transitional woodland, shrub")
    assert parse_labels(text) == sorted(labels)
    assert format_labels(reversed(labels)) == text  # order of the input does not matter


def test_parse_labels_is_lenient_about_surrounding_text_and_case():
    assert parse_labels("Sure! labels: Pastures;  Arable land.\nAnything else") == ["Arable land", "Pastures"]
    assert parse_labels("Pastures; Mixed forest") == ["Mixed forest", "Pastures"]
    assert parse_labels("Labels: pastures; Moon base", vocabulary=BEN19_LABELS) == ["Pastures"]
    assert parse_labels("") == [] and parse_labels(format_labels([])) == [] and format_labels([]) == "Labels:"
    with pytest.raises(ValueError, match="Bad;label"):
        format_labels(["Bad;label"])


def test_dates_seasons_and_43_to_19_mapping_against_the_parquet():
    assert parse_acquisition_date("S2B_MSIL2A_20170924T93020_69_24") == "2017-09-24"
    assert parse_acquisition_date("Forest_1") is None
    assert season_of("2017-06-13", 47.0) == "summer"
    assert season_of("2017-06-13", -33.0) == "winter"
    assert season_of("2017-12-01", 60.0) == "winter"
    assert season_of("2018-03-31", 60.0) == "spring"
    assert season_of("2017-11-30", 60.0) == "autumn"
    # every v1 sample with a reBEN row: its 43 labels mapped to 19 equal reBEN's labels
    metadata = pd.read_parquet(PARQUET).set_index("s2v1_name")
    checked = 0
    for folder in sorted(V1.iterdir()):
        if folder.name in metadata.index:
            mapped, _ = sources.v1_labels(folder)
            assert mapped == sorted(metadata.loc[folder.name, "labels"]), folder.name
            checked += 1
    assert checked == 5


def test_trim_to_sentence_drops_an_unfinished_tail():
    assert trim_to_sentence("Fields and forest. The NDVI is high. Snow lies on") == \
        "Fields and forest. The NDVI is high."
    assert trim_to_sentence("A lake!  ") == "A lake!"
    assert trim_to_sentence("no full stop at all") == "no full stop at all"


def test_stratified_split_is_seeded_and_stratified():
    ids = [f"{c}_{i}" for c in "ABC" for i in range(10)]
    strata = [i[0] for i in ids]
    first = stratified_split(ids, strata, seed=3)
    assert first == stratified_split(ids, strata, seed=3)
    assert first != stratified_split(ids, strata, seed=4)
    for stratum in "ABC":
        counts = pd.Series([first[i] for i in ids if i[0] == stratum]).value_counts().to_dict()
        assert counts == {"train": 8, "validation": 1, "test": 1}


def test_several_metadata_parquets_are_combined(tmp_path):
    frame = pd.read_parquet(PARQUET)
    frame.iloc[:3].to_parquet(tmp_path / "a.parquet")
    frame.iloc[3:].to_parquet(tmp_path / "b.parquet")
    combined = load_reben_metadata([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    assert sorted(combined["patch_id"]) == sorted(frame["patch_id"])
    with pytest.raises(ValueError, match="more than once"):
        load_reben_metadata([tmp_path / "a.parquet", PARQUET])
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_reben_metadata(tmp_path / "missing.parquet")
