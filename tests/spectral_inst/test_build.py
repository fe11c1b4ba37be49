"""Spectral-Inst builder on the real samples in tests/data (reBEN v2, BigEarthNet v1, EuroSAT)."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import load_dataset, load_from_disk
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from spectral_llava.inference import format_labels, parse_labels
from spectral_llava.spectral_inst import (COUNTRY_BOUNDS, BuildConfig, TemplateCaptioner, build_dataset,
                                          make_captioner, metadata_prompt, push_dataset, resolve_image_path)
from spectral_llava.spectral_inst import patches
from spectral_llava.spectral_inst.builder import discover
from spectral_inst_data import REBEN, PARQUET, V1, EUROSAT, SNOWY_V1, all_rows


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    output = tmp_path_factory.mktemp("spectral-inst") / "out"
    config = BuildConfig(output=str(output), bigearthnet=str(REBEN), metadata=str(PARQUET), bigearthnet_v1=str(V1),
                         eurosat=str(EUROSAT), num_proc=2, seed=0)
    report = build_dataset(config)
    patches = [row for rows in all_rows(output / "patches").values() for row in rows]
    return output, report, {row["id"]: row for row in patches}


def test_labels_splits_and_flags_equal_the_parquet(full_build):
    output, report, patches = full_build
    metadata = pd.read_parquet(PARQUET)
    assert report["skipped"] == []
    assert len(patches) == 2 + 6 + 100
    for row in metadata.itertuples():
        patch = patches.get(row.patch_id) or patches[row.s2v1_name]
        assert patch["labels"] == sorted(row.labels)
        assert patch["label_source"] == "reben"
        assert patch["split"] == row.split
        assert patch["country"] == row.country and patch["country_source"] == "metadata"
        assert patch["snow"] == row.contains_seasonal_snow and patch["cloud"] == row.contains_cloud_or_shadow
        assert patch["reben_patch_id"] == row.patch_id
    snowy = patches[SNOWY_V1]
    assert snowy["label_source"] == "bigearthnet-v1-43-to-19"
    assert snowy["labels"] == ["Arable land", "Coniferous forest", "Mixed forest"]
    assert snowy["country"] == "Finland" and snowy["country_source"] == "bounding-box"
    assert snowy["snow"] is True and snowy["flag_source"] == "spectral" and snowy["snow_fraction"] > 0.9


def test_centres_fall_in_their_countries_and_match_the_v1_json_corners(full_build):
    _, _, patches = full_build
    located = [p for p in patches.values() if p["country"]]
    assert len(located) == 8
    for patch in located:
        lon0, lat0, lon1, lat1 = COUNTRY_BOUNDS[patch["country"]]
        assert lat0 <= patch["latitude"] <= lat1 and lon0 <= patch["longitude"] <= lon1, patch["id"]
    for folder in V1.iterdir():  # independent georeference: the corner coordinates in the label json
        meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
        corners = meta["coordinates"]
        x, y = (corners["ulx"] + corners["lrx"]) / 2, (corners["uly"] + corners["lry"]) / 2
        lon, lat = (v[0] for v in warp_transform(CRS.from_wkt(meta["projection"]), "EPSG:4326", [x], [y]))
        assert patches[folder.name]["latitude"] == pytest.approx(lat, abs=1e-6)
        assert patches[folder.name]["longitude"] == pytest.approx(lon, abs=1e-6)
    # EuroSAT has no country metadata but its centres lie in Europe
    for patch in patches.values():
        if patch["source"] == "eurosat":
            assert patch["country"] is None and 34 < patch["latitude"] < 72 and -25 < patch["longitude"] < 45


def test_dates_seasons_spectral_summary_and_renderings(full_build):
    output, _, patches = full_build
    v2 = patches["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43"]
    assert (v2["acquisition_date"], v2["season"]) == ("2017-06-13", "summer")
    assert (patches["S2A_MSIL2A_20171221T112501_56_35"]["season"]) == "winter"
    assert (patches[SNOWY_V1]["acquisition_date"], patches[SNOWY_V1]["season"]) == ("2018-02-04", "winter")
    pasture = patches["S2A_MSIL2A_20170617T113321_4_55"]  # Irish pasture in June: green, no snow, no water
    assert pasture["ndvi_mean"] > 0.6 and pasture["vegetation_fraction"] > 0.9
    assert pasture["snow_fraction"] == 0 and pasture["ndsi_mean"] < 0 and pasture["ndwi_mean"] < 0
    assert patches[SNOWY_V1]["ndsi_mean"] > 0.5 and patches[SNOWY_V1]["ndvi_mean"] < 0.3
    sea = [p for p in patches.values() if p["labels"] == ["SeaLake"]]
    assert len(sea) == 10 and np.median([p["water_fraction"] for p in sea]) > 0.5
    eurosat = pd.DataFrame([p for p in patches.values() if p["source"] == "eurosat"])
    assert eurosat.groupby("split").size().to_dict() == {"test": 10, "train": 80, "validation": 10}
    for patch in patches.values():
        with Image.open(output / patch["rgb_path"]) as image:
            assert image.mode == "RGB" and image.size == (patch["width"], patch["height"])
            pixels = np.asarray(image)
        assert pixels.max() == 255 and pixels.min() == 0  # the 2-98 % stretch saturates both ends
        assert os.path.exists(resolve_image_path(patch["image_path"], json.loads(
            (output / "build_info.json").read_text())["image_roots"]))
    assert {patches[p]["width"] for p in patches if patches[p]["source"] == "eurosat"} == {64}


def test_records_are_llava_conversations_with_task_tokens(full_build):
    output, _, patches = full_build
    instructions = all_rows(output / "instructions")
    alignment = all_rows(output / "alignment")
    for split, rows in instructions.items():
        assert len(rows) == 2 * sum(p["split"] == split for p in patches.values())
        for record in rows:
            human, gpt = record["conversations"]
            assert human["from"] == "human" and gpt["from"] == "gpt"
            patch = patches[record["patch_id"]]
            assert record["image"] == patch["image_path"] and record["id"] == f"{patch['id']}-{record['task']}"
            assert human["value"].startswith(f"<image>\n[{record['task']}] ")
            if record["task"] == "classification":
                assert parse_labels(gpt["value"]) == patch["labels"]
            else:
                assert gpt["value"] == patch["caption"]
    questions = {r["conversations"][0]["value"] for rows in instructions.values() for r in rows}
    assert len(questions) >= 8  # several phrasings per task
    variants = [r for rows in alignment.values() for r in rows]
    assert sorted({r["variant"] for r in variants}) == ["description", "labels"]
    assert len(variants) == 2 * len(patches)
    for record in variants:
        answer = record["conversations"][1]["value"]
        patch = patches[record["patch_id"]]
        assert answer == (format_labels(patch["labels"]) if record["variant"] == "labels" else patch["caption"])
    # the dataset card's configs make the folder loadable with load_dataset
    card_loaded = load_dataset(str(output), "instructions", cache_dir=str(output / ".work" / "hf-cache"))
    assert {split: len(card_loaded[split]) for split in card_loaded} == {s: len(r) for s, r in instructions.items()}


def test_template_captions_are_deterministic_varied_and_grounded(full_build):
    _, _, patches = full_build
    captioner = TemplateCaptioner(seed=0)
    for patch in patches.values():
        assert captioner.caption(patch) == patch["caption"]  # recomputed == stored
        assert patch["caption_prompt"] == "template(seed=0)" and patch["captioner"] == "template"
    openings = {patch["caption"].split(" ")[0] for patch in patches.values()}
    assert len(openings) >= 3
    snowy = patches[SNOWY_V1]["caption"]
    assert "Finland" in snowy and "snow" in snowy.lower() and "coniferous forest" in snowy
    assert "Austria" in patches["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43"]["caption"]
    assert any(TemplateCaptioner(seed=seed).caption(patches[SNOWY_V1]) != snowy for seed in range(1, 6))


def test_metadata_prompt_carries_labels_place_date_and_indices(full_build):
    _, _, patches = full_build
    prompt = metadata_prompt(patches["S2A_MSIL2A_20171221T112501_56_35"])
    for fact in ("- Land cover: Broad-leaved forest; Complex cultivation patterns", "- Location: Portugal (",
                 "- Date: 2017-12-21 (winter)", "(mean NDVI 0.60)", "1200 m x 1200 m", "seasonal snow: no"):
        assert fact in prompt


def _small_config(output, **overrides):
    return BuildConfig(output=str(output), bigearthnet=str(REBEN), metadata=str(PARQUET), bigearthnet_v1=str(V1),
                       **overrides)


def _record_mtimes(output):
    return {p.name: p.stat().st_mtime_ns for p in (Path(output) / ".work" / "records").glob("*/*.json")}


def test_max_patches_then_full_build_resumes_without_duplicates(tmp_path):
    first = build_dataset(_small_config(tmp_path, max_patches=3))
    assert first["patches_ok"] == 3
    cached = _record_mtimes(tmp_path)
    assert len(cached) == 3
    second = build_dataset(_small_config(tmp_path))
    assert second["patches_ok"] == 8
    after = _record_mtimes(tmp_path)
    assert all(after[name] == mtime for name, mtime in cached.items())  # cached records were not redone
    ids = [row["id"] for rows in all_rows(tmp_path / "patches").values() for row in rows]
    assert len(ids) == len(set(ids)) == 8
    instruction_ids = [r["id"] for rows in all_rows(tmp_path / "instructions").values() for r in rows]
    assert len(instruction_ids) == len(set(instruction_ids)) == 16


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    real = patches.process_patch
    calls = []

    def interrupt_after_four(task, output_dir, radiometry=None, band_names=None):
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated Ctrl-C mid-build")
        calls.append(task.id)
        return real(task, output_dir, radiometry, band_names)

    monkeypatch.setattr(patches, "process_patch", interrupt_after_four)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(_small_config(tmp_path))
    assert not (tmp_path / "patches").exists()
    cached = _record_mtimes(tmp_path)
    assert sorted(cached) == sorted(f"{i}.json" for i in calls)
    monkeypatch.setattr(patches, "process_patch", real)
    report = build_dataset(_small_config(tmp_path))
    assert report["patches_ok"] == 8 and report["skipped"] == []
    assert all(_record_mtimes(tmp_path)[name] == mtime for name, mtime in cached.items())
    ids = [row["id"] for rows in all_rows(tmp_path / "patches").values() for row in rows]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8
    assert not list(tmp_path.rglob("*.tmp*"))


def test_corrupt_patches_are_skipped_and_reported(tmp_path):
    eurosat = tmp_path / "eurosat"
    (eurosat / "Forest").mkdir(parents=True)
    shutil.copy(EUROSAT / "Forest" / "Forest_1.tif", eurosat / "Forest")
    data = (EUROSAT / "Forest" / "Forest_2.tif").read_bytes()
    (eurosat / "Forest" / "Forest_2.tif").write_bytes(data[: len(data) // 3])
    v1 = tmp_path / "v1"
    shutil.copytree(V1 / SNOWY_V1, v1 / SNOWY_V1)
    band = v1 / SNOWY_V1 / f"{SNOWY_V1}_B04.tif"
    band.write_bytes(band.read_bytes()[:500])
    output = tmp_path / "out"
    report = build_dataset(BuildConfig(output=str(output), eurosat=str(eurosat), bigearthnet_v1=str(v1), num_proc=2))
    assert report["patches_ok"] == 1
    reasons = {item["id"]: item for item in report["skipped"]}
    assert sorted(reasons) == ["Forest_2", SNOWY_V1]
    assert reasons["Forest_2"]["path"].endswith("Forest_2.tif") and "Forest_2.tif" in reasons["Forest_2"]["reason"]
    assert reasons[SNOWY_V1]["path"].endswith(SNOWY_V1) and f"{SNOWY_V1}_B04.tif" in reasons[SNOWY_V1]["reason"]
    assert json.loads((output / "report.json").read_text())["skipped"] == report["skipped"]
    assert [row["id"] for rows in all_rows(output / "patches").values() for row in rows] == ["Forest_1"]


def test_filters_countries_snow_split(tmp_path):
    report = build_dataset(_small_config(tmp_path / "a", countries=["Ireland", "Finland"], skip_snow=True))
    ids = {row["id"]: row for rows in all_rows(tmp_path / "a" / "patches").values() for row in rows}
    assert {row["country"] for row in ids.values()} == {"Ireland", "Finland"}
    assert SNOWY_V1 not in ids and len(ids) == 3
    assert report["filtered_after_processing"] == {"snow": 1}
    build_dataset(_small_config(tmp_path / "b", splits=["test"]))
    assert list(load_from_disk(str(tmp_path / "b" / "patches"))) == ["test"]


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--metadata"):
        build_dataset(BuildConfig(output=str(tmp_path), bigearthnet=str(REBEN)))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(BuildConfig(output=str(tmp_path), eurosat=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="--captioner"):
        make_captioner("gpt5")
    with pytest.raises(ValueError, match="--shard '3/2'"):
        BuildConfig(output=str(tmp_path), eurosat=str(EUROSAT), shard="3/2")
    with pytest.raises(ValueError, match="--num-proc 0"):
        BuildConfig(output=str(tmp_path), eurosat=str(EUROSAT), num_proc=0)


def test_push_to_hub_reports_an_unreachable_hub_cleanly(tmp_path):
    output = tmp_path / "out"
    build_dataset(BuildConfig(output=str(output), bigearthnet=str(REBEN), metadata=str(PARQUET)))
    with pytest.raises(RuntimeError, match="someone/spectral-inst"):
        push_dataset(str(output), "someone/spectral-inst", token="hf_fake", endpoint="http://127.0.0.1:9")
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_dataset(str(tmp_path), "someone/spectral-inst", dry_run=True)


def test_sharded_build_then_assembly(tmp_path):
    reports = [build_dataset(_small_config(tmp_path, shard=f"{i}/2")) for i in range(2)]
    assert sum(r["patches_ok"] for r in reports) == 8 and not (tmp_path / "patches").exists()
    cached = _record_mtimes(tmp_path)
    final = build_dataset(_small_config(tmp_path))
    assert final["patches_ok"] == 8 and _record_mtimes(tmp_path) == cached


def test_metadata_added_later_overrides_cached_v1_labels(tmp_path):
    build_dataset(BuildConfig(output=str(tmp_path), bigearthnet_v1=str(V1)))
    before = {r["id"]: r for rows in all_rows(tmp_path / "patches").values() for r in rows}
    assert {r["label_source"] for r in before.values()} == {"bigearthnet-v1-43-to-19"}
    cached = _record_mtimes(tmp_path)
    build_dataset(BuildConfig(output=str(tmp_path), bigearthnet_v1=str(V1), metadata=str(PARQUET)))
    after = {r["id"]: r for rows in all_rows(tmp_path / "patches").values() for r in rows}
    assert _record_mtimes(tmp_path) == cached  # no patch re-read
    metadata = pd.read_parquet(PARQUET).set_index("s2v1_name")
    for name, row in after.items():
        if name in metadata.index:
            assert row["label_source"] == "reben" and row["labels"] == sorted(metadata.loc[name, "labels"])
            assert row["split"] == metadata.loc[name, "split"] and row["country_source"] == "metadata"
            assert row["reben_patch_id"] == metadata.loc[name, "patch_id"]
            assert metadata.loc[name, "country"] in row["caption"]
        else:
            assert row["label_source"] == "bigearthnet-v1-43-to-19"


def test_radiometry_is_recorded_and_a_change_reprocesses_the_records(tmp_path):
    from spectral_llava.processing.radiometry_settings import RULES_VERSION, RadiometrySettings

    build_dataset(_small_config(tmp_path, max_patches=2))
    info = json.loads((tmp_path / "build_info.json").read_text())["radiometry"]
    assert (info["rules_version"], info["input_offset"], info["input_scale"], info["strict"]) == (
        RULES_VERSION, None, None, False)
    records = [json.loads(p.read_text()) for p in (tmp_path / ".work" / "records").glob("*/*.json")]
    assert [(r["radiometry"]["offset"], r["radiometry"]["scale"]) for r in records] == [(0.0, 1.0)] * 2
    cached = _record_mtimes(tmp_path)
    build_dataset(_small_config(tmp_path, max_patches=2, input_scale=1.0))
    assert all(_record_mtimes(tmp_path)[name] != mtime for name, mtime in cached.items())  # rebuilt
    assert json.loads((tmp_path / "build_info.json").read_text())["radiometry"]["input_scale"] == 1.0
    records = [json.loads(p.read_text()) for p in (tmp_path / ".work" / "records").glob("*/*.json")]
    assert {r["radiometry"]["source"] for r in records} == {"explicit"}
    # a wrong offset with strict: every patch is refused, naming its folder and band
    tasks, _, _ = discover(_small_config(tmp_path, max_patches=2))
    strict = _small_config(tmp_path, input_offset=-1000.0, strict=True).radiometry
    assert strict == RadiometrySettings(-1000.0, strict=True)  # the config's flags, as one settings object
    ready, errors = patches.process_all(tasks, str(tmp_path / "strict"), 1, strict)
    assert ready == [] and len(errors) == 2
    assert all(re.search(re.escape(item["path"]) + r".*band B\d\d: .*negative reflectance", item["reason"])
               for item in errors)
