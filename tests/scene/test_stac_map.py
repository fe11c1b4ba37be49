"""`map_scene` on STAC items (Earth Search and Planetary Computer naming, locally and over a 127.0.0.1 HTTP server
that honours Range requests) gives the rows of the same bands as files; bad items leave nothing behind."""

import glob
import os

import pytest

from sentinel2_samples import MAJOR_TOM_CROP
from stac_samples import PRODUCT, RangeServer, crop_cogs, earth_search_item, planetary_item, write_item
from spectral_llava.scene import MapOptions, map_scene

FAST = dict(max_new_tokens=6, no_overview=True, tile_size=32, batch_size=8, workers=0)


def run(model, source, output, **options):
    return map_scene(source, *model, output, MapOptions(**{**FAST, **options}))


def comparable(rows):
    return [{**{k: v for k, v in row.items() if k != "geometry"}, "wkt": row["geometry"].wkt} for row in rows]


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    return crop_cogs(tmp_path_factory.mktemp("stac-map"))


@pytest.fixture(scope="module")
def from_files(tiny_map_model, tmp_path_factory):
    return run(tiny_map_model, MAJOR_TOM_CROP, tmp_path_factory.mktemp("files") / "files.parquet")


def test_mapping_an_item_gives_the_rows_of_its_band_files(tiny_map_model, from_files, cogs, tmp_path):
    item_path = write_item(earth_search_item(cogs), tmp_path / "item.json")
    result = run(tiny_map_model, item_path, tmp_path / "item.parquet")
    assert comparable(result.rows) == comparable(from_files.rows)  # same tiles, ids, labels, footprints
    assert result.rows[0]["tile_id"] == f"{PRODUCT}_t32s32_r0_c0"
    stac = result.metadata["stac"]
    assert (stac["item_id"], stac["datetime"], stac["collection"]) == (
        "S2A_33NZA_20220706_0_L2A", "2022-07-06T09:11:46.521000Z", "sentinel-2-l2a")
    assert stac["links"][0] == {"rel": "self", "href": "https://earth-search.aws.element84.com/v1/collections/"
                                                       "sentinel-2-l2a/items/S2A_33NZA_20220706_0_L2A"}
    assert stac["assets"]["B05"] == {"key": "rededge1", "href": cogs["B05"]}
    radiometry = result.metadata["radiometry"]
    assert (radiometry["source"], radiometry["offset"]) == ("stac", -1000.0)
    assert from_files.metadata["radiometry"]["offset"] == -1000.0
    assert result.metadata["source"] == item_path and result.metadata["crs"] == from_files.metadata["crs"]


def test_mapping_an_item_over_http_reads_it_windowed(tiny_map_model, from_files, cogs, tmp_path):
    root = os.path.dirname(os.path.dirname(cogs["B02"]))
    band_bytes = sum(os.path.getsize(path) for path in cogs.values())
    with RangeServer(root) as server:
        item_url = server.url(write_item(planetary_item({b: server.url(p) for b, p in cogs.items()}),
                                         os.path.join(root, "pc-item.json")))
        result = run(tiny_map_model, item_url, tmp_path / "http.parquet", workers=1)
        served = {path: size for path, size in server.bytes_served.items() if path.endswith(".tif")}
        ranged = [request for request in server.requests if request[0].endswith(".tif")]
    assert comparable(result.rows) == comparable(from_files.rows)
    assert result.metadata["source"] == item_url and result.metadata["radiometry"]["source"] == "stac"
    assert set(served) == {os.path.relpath(path, root) for path in cogs.values()}  # band assets only, never visual/SCL
    assert all(rng is not None and rng.startswith("bytes=") for _, rng in ranged)  # every read a range request
    print(f"\nmapping the crop item over HTTP: {sum(served.values())} B served for {band_bytes} B of band COGs")


def test_bad_items_leave_no_output(tiny_map_model, cogs, tmp_path):
    no_bands = earth_search_item(cogs)
    no_bands["assets"] = {key: asset for key, asset in no_bands["assets"].items() if "eo:bands" not in asset}
    not_s2 = earth_search_item(cogs, platform="landsat-9")
    not_s2["properties"] = {k: v for k, v in not_s2["properties"].items() if not k.startswith("s2:")}
    not_s2["properties"]["constellation"] = None
    not_s2["collection"] = "landsat-c2-l2"
    mixed = earth_search_item(cogs)
    mixed["assets"]["nir"]["proj:epsg"] = 32634
    cases = [(no_bands, "no band assets"), (not_s2, "is not a Sentinel-2 item"),
             (mixed, "band assets lie in different CRSs"),
             (earth_search_item({**cogs, "B8A": "http://127.0.0.1:9/B8A.tif"}), r"asset 'nir08' \(band B8A\)"),
             (earth_search_item({b: p for b, p in cogs.items() if b != "B09"}), r"band\(s\) B09 missing")]
    for index, (item, message) in enumerate(cases):
        for output in (tmp_path / f"bad{index}.parquet", tmp_path / f"bad{index}.tif"):
            with pytest.raises(ValueError, match=message):
                run(tiny_map_model, item, output)
    assert os.listdir(tmp_path) == [] and not glob.glob(str(tmp_path / ".*"))


def test_caption_and_classify_take_items_and_urls(tiny_map_model, cogs, tmp_path):
    """What `spectral-llava caption` / `classify` run: the footprint check reads the item's headers (the 120 px crop
    is 3.8x a 32 px model's footprint: refused, pointing to map), and the answers equal the band files'."""
    from spectral_llava.inference import classify_images, refuse_squashed_inputs

    model, processor = tiny_map_model
    item_path = write_item(earth_search_item(cogs), tmp_path / "item.json")
    with pytest.raises(ValueError, match=r"item\.json covers 3\.8x the model's footprint .* `spectral-llava map "):
        refuse_squashed_inputs([item_path], processor.image_processor, "MODEL")
    root = os.path.dirname(os.path.dirname(cogs["B02"]))
    with RangeServer(root) as server:
        sources = [item_path, server.url(write_item(earth_search_item({b: server.url(p) for b, p in cogs.items()}),
                                                    os.path.join(root, "served.json")))]
        rows = classify_images(model, processor, sources + [MAJOR_TOM_CROP], max_new_tokens=6)
    assert rows[0]["labels"] == rows[1]["labels"] == rows[2]["labels"]
    assert [row["radiometry"]["source"] for row in rows] == ["stac", "stac", "product_name"]
