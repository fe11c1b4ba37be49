"""STAC items and raster URLs as sources of the reading API: band assets found by their own band metadata in Earth
Search's, Planetary Computer's and Copernicus Data Space's naming, read like band files (locally, from file:// and
over HTTP with range requests), the item's radiometry, and the errors bad items get."""

import json
import os
import warnings

import numpy as np
import pytest
import rasterio

from sentinel2_samples import MAJOR_TOM, MAJOR_TOM_CROP
from stac_samples import (PRODUCT, RangeServer, crop_cogs, earth_search_item, planetary_item, write_cogs,
                          write_item)
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor
from spectral_llava.processing.radiometry import resolve_radiometry
from spectral_llava.processing.scene_reader import SceneReader
from spectral_llava.processing.sentinel2_io import SPECTRALGPT_BANDS, detect_layout, load_item, read_image
from spectral_llava.processing.sentinel2_stac import identify_band


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    """COGs of the real Major-TOM crop bands: {band: path}."""
    return crop_cogs(tmp_path_factory.mktemp("stac"))


@pytest.fixture(scope="module")
def crop_image():
    return read_image(MAJOR_TOM_CROP)


def test_earth_search_assets_are_found_by_their_band_metadata(cogs):
    item = load_item(earth_search_item(cogs))
    assert list(item.bands) == list(SPECTRALGPT_BANDS)  # canonical order, from eo:bands names such as rededge1
    assert {band: asset.key for band, asset in item.bands.items()} == {
        "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
        "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22"}
    assert all(asset.href == cogs[band] for band, asset in item.bands.items())  # the COGs, never the -jp2 copies
    assert (item.product, item.processing_baseline, item.boa_offset_applied) == (PRODUCT, "04.00", False)
    assert item.datetime == "2022-07-06T09:11:46.521000Z" and item.collection == "sentinel-2-l2a"
    assert [link["rel"] for link in item.summary()["links"]] == ["self", "parent", "collection", "root"]


def test_planetary_computer_assets_are_found_by_their_band_metadata(cogs):
    item = load_item(planetary_item(cogs))
    assert {band: asset.key for band, asset in item.bands.items()} == {band: band for band in SPECTRALGPT_BANDS}
    assert item.boa_offset_applied is None and item.product == PRODUCT


@pytest.mark.parametrize("entry,band", [
    ({"name": "B8A", "common_name": "nir08"}, "B8A"), ({"name": "B08", "common_name": "nir"}, "B08"),
    ({"name": "nir08", "common_name": "nir08"}, "B8A"), ({"name": "band_x", "common_name": "nir"}, "B08"),
    ({"name": "re", "common_name": "rededge", "center_wavelength": 0.74}, "B06"),
    ({"name": "re", "eo:common_name": "rededge", "eo:center_wavelength": 0.783}, "B07"),  # STAC 1.1 `bands`
    ({"name": "re", "common_name": "rededge"}, None), ({"name": "SCL"}, None), ({"common_name": "lwir11"}, None)])
def test_band_entries_map_to_sentinel2_bands(entry, band):
    assert identify_band(entry) == band


def test_copernicus_naming_takes_the_finest_copy_of_each_band(tmp_path):
    """CDSE-style STAC 1.1 item: `bands` with eo:common_name, B02_10m / B02_20m / B02_60m assets: the 10 m one."""
    assets = {f"{band}_{res}m": {"href": f"https://example.org/{band}_{res}m.jp2", "type": "image/jp2",
                                 "gsd": res, "bands": [{"name": band, "eo:common_name": common}]}
              for band, common in (("B02", "blue"), ("B04", "red")) for res in (60, 20, 10)}
    document = {"type": "Feature", "stac_version": "1.1.0", "id": "S2B_MSIL2A_x", "collection": "sentinel-2-l2a",
                "properties": {"platform": "sentinel-2b", "processing:version": "05.11"}, "assets": assets}
    item = load_item(document)
    assert {band: asset.key for band, asset in item.bands.items()} == {"B02": "B02_10m", "B04": "B04_10m"}
    assert item.processing_baseline == "05.11"


def test_item_file_url_dict_and_pystac_item_give_one_layout(cogs, tmp_path):
    pystac = pytest.importorskip("pystac")
    document = earth_search_item({band: os.path.relpath(path, tmp_path) for band, path in cogs.items()})
    path = write_item(document, tmp_path / "item.json")
    layouts = [detect_layout(path), detect_layout(f"file://{path}"), detect_layout(pystac.Item.from_file(path))]
    for layout in layouts:
        assert layout.kind == "stac" and layout.files == {band: cogs[band] for band in layout.files}
    assert detect_layout(path).path == path  # relative hrefs resolved against the item file


def test_reading_an_item_gives_the_band_files_pixels(cogs, tmp_path, crop_image):
    image = read_image(earth_search_item(cogs))
    assert image.band_names == crop_image.band_names
    np.testing.assert_array_equal(image.data, crop_image.data)
    assert image.metadata["crs"] == crop_image.metadata["crs"]
    assert image.metadata["transform"] == crop_image.metadata["transform"]
    assert image.metadata["stac"].id == "S2A_33NZA_20220706_0_L2A"
    with SceneReader(planetary_item(cogs)) as reader:
        np.testing.assert_allclose(reader.read(40, 8, 64, 64).data, crop_image.data[:, 40:104, 8:72], atol=0.02)
        assert reader.product == PRODUCT


def test_items_and_cogs_over_http_are_read_with_range_requests(cogs, tmp_path, crop_image):
    root = os.path.dirname(os.path.dirname(cogs["B02"]))
    with RangeServer(root) as server:
        item_url = server.url(write_item(earth_search_item({b: server.url(p) for b, p in cogs.items()}),
                                         os.path.join(root, "item.json")))
        image = read_image(item_url)
        np.testing.assert_array_equal(image.data, crop_image.data)
        assert image.metadata["source"] == item_url
        b04 = read_image(server.url(cogs["B04"]))  # a plain COG URL, like a local path
        np.testing.assert_array_equal(b04.data[0], crop_image.data[crop_image.band_names.index("B04")])
        assert all(request[1] is None or request[1].startswith("bytes=") for request in server.requests)
        assert any(request[1] for request in server.requests)


@pytest.mark.skipif(not os.path.isdir(MAJOR_TOM), reason="needs ../shared/data/major-tom-s2l2a (the full cell)")
def test_a_window_over_http_reads_a_fraction_of_the_bands(tmp_path):
    """The full 1068 px Major-TOM cell as 256 px-tiled COGs: opening the item reads headers, one 128 px window reads
    the blocks it touches; neither downloads the bands."""
    cogs = write_cogs(MAJOR_TOM, tmp_path / "cogs", blocksize=256)
    band_bytes = sum(os.path.getsize(path) for path in cogs.values())
    local = SceneReader(MAJOR_TOM).read(300, 300, 128, 128).data
    with RangeServer(tmp_path) as server:
        reader = SceneReader(earth_search_item({band: server.url(path) for band, path in cogs.items()}))
        headers = server.total_bytes()
        window = reader.read(300, 300, 128, 128).data
        served = server.total_bytes()
        reader.close()
    np.testing.assert_array_equal(window, local)
    print(f"\nband files {band_bytes} B; headers {headers} B ({headers / band_bytes:.1%}); one 128 px window "
          f"{served - headers} B ({(served - headers) / band_bytes:.1%})")
    assert headers < 0.05 * band_bytes and served < 0.15 * band_bytes


def test_item_radiometry_follows_the_catalogue_flags(cogs, crop_image):
    """Baseline 04.00: with earthsearch:boa_offset_applied false the raster:bands offset -0.1 / scale 0.0001 gives
    -1000 (the values are DN + 1000, as the crop's are); with the flag true the values already had it removed, so
    no offset, whatever raster:bands says; without raster:bands the baseline decides; before 04.00 no offset."""
    cases = [(earth_search_item(cogs), -1000.0, "raster:bands"),
             (earth_search_item(cogs, boa_offset_applied=True), 0.0, "boa_offset_applied true"),
             (earth_search_item(cogs, raster_bands=False), -1000.0, "processing baseline 04.00 >= 04.00"),
             (planetary_item(cogs), -1000.0, "processing baseline 04.00 >= 04.00"),
             (planetary_item(cogs, baseline="02.14"), 0.0, "processing baseline 02.14 < 04.00")]
    for item, offset, detail in cases:
        resolved = resolve_radiometry(item)
        assert (resolved.source, resolved.offset, resolved.scale, resolved.band_offsets) == ("stac", offset, 1.0, {})
        assert detail in resolved.detail
    assert resolve_radiometry(crop_image).offset == -1000.0  # the same bands as files: the product name's -1000


def test_processor_applies_the_item_radiometry(cogs):
    processor = SpectralImageProcessor(image_size=32)
    from_files = processor(MAJOR_TOM_CROP, return_metadata=True)
    from_item = processor(earth_search_item(cogs), return_metadata=True)
    assert from_item["metadata"][0]["radiometry"]["source"] == "stac"
    np.testing.assert_array_equal(from_item["pixel_values"].numpy(), from_files["pixel_values"].numpy())
    applied = processor(earth_search_item(cogs, boa_offset_applied=True), return_metadata=True)
    assert applied["metadata"][0]["radiometry"]["offset"] == 0.0
    assert not np.array_equal(applied["pixel_values"].numpy(), from_files["pixel_values"].numpy())


def test_an_item_missing_a_band_follows_the_missing_band_rule(cogs):
    """The processor fills the band with the dataset mean (127/255 after normalisation) and flags it in band_mask."""
    processor = SpectralImageProcessor(image_size=32)
    item = earth_search_item({band: path for band, path in cogs.items() if band != "B05"})
    out = processor(item)
    assert out["band_mask"][0].tolist() == [band != "B05" for band in processor.band_names]
    filled = out["pixel_values"][0, processor.band_names.index("B05")]
    np.testing.assert_allclose(filled.numpy(), 127 / 255, atol=1e-6)  # bicubic resize of a constant


def test_unreachable_hrefs_name_the_asset(cogs, tmp_path):
    with RangeServer(tmp_path) as server:
        missing = earth_search_item({**cogs, "B05": server.url(tmp_path / "gone" / "B05.tif")})
        with pytest.raises(ValueError, match=r"cannot read asset 'rededge1' \(band B05\) of STAC item "
                                             r"S2A_33NZA_20220706_0_L2A at http://127\.0\.0\.1:\d+/gone/B05\.tif: "
                                             r"the href does not answer.*404"):
            SceneReader(missing)
    refused = earth_search_item({**cogs, "B11": "http://127.0.0.1:9/B11.tif"})  # nothing listens on port 9
    with pytest.raises(ValueError, match=r"asset 'swir16' \(band B11\).*127\.0\.0\.1:9/B11\.tif: the href does not"):
        read_image(refused)
    with pytest.raises(ValueError, match=r"cannot read the STAC item http://127\.0\.0\.1:9/item: "):
        read_image("http://127.0.0.1:9/item")


def test_bad_items_get_clear_errors(cogs, tmp_path):
    no_bands = earth_search_item(cogs)
    no_bands["assets"] = {key: asset for key, asset in no_bands["assets"].items() if "eo:bands" not in asset}
    with pytest.raises(ValueError, match=r"STAC item S2A_33NZA_20220706_0_L2A: no band assets: none of its assets "
                                         r"\(scl, thumbnail\) declares a single Sentinel-2 band"):
        load_item(no_bands)
    landsat = earth_search_item(cogs, platform="landsat-8")
    landsat["properties"].update(constellation="landsat")
    landsat["collection"] = "landsat-c2-l2"
    landsat["properties"] = {k: v for k, v in landsat["properties"].items() if not k.startswith("s2:")}
    with pytest.raises(ValueError, match=r"S2A_33NZA_20220706_0_L2A is not a Sentinel-2 item \(platform "
                                         r"'landsat-8', constellation 'landsat', collection 'landsat-c2-l2'\)"):
        read_image(landsat)
    mixed = earth_search_item(cogs)
    mixed["assets"]["red"]["proj:epsg"] = 32634
    with pytest.raises(ValueError, match=r"band assets lie in different CRSs \(.*B04 \('red'\) EPSG:32634"):
        SceneReader(mixed)
    collection = write_item({"type": "FeatureCollection", "features": []}, tmp_path / "search.json")
    with pytest.raises(ValueError, match=r"search\.json is not a STAC item .* 'FeatureCollection'; pass one of its"):
        read_image(collection)
    with pytest.raises(ValueError, match="band_names= names the channels of an array or multi-band file, but STAC"):
        read_image(earth_search_item(cogs), band_names=["B02"])


def test_band_files_in_different_crss_are_refused(cogs, tmp_path):
    """Assets that declare no CRS but whose files disagree: the headers catch it."""
    with rasterio.open(cogs["B04"]) as source:
        profile, data = source.profile, source.read()
    profile.update(driver="GTiff", crs="EPSG:32634")
    other = tmp_path / "B04_utm34.tif"
    with rasterio.open(other, "w", **profile) as target:
        target.write(data)
    item = earth_search_item({**cogs, "B04": str(other)})
    for asset in item["assets"].values():
        asset.pop("proj:epsg", None)
    item["properties"].pop("proj:epsg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"band files lie in different CRSs \(.*B04 'red' EPSG:32634"):
            SceneReader(item)
        with pytest.raises(ValueError, match="band files lie in different CRSs"):
            read_image(item)


def test_item_json_on_disk_round_trips(cogs, tmp_path):
    path = write_item(earth_search_item(cogs), tmp_path / "item.json")
    assert json.load(open(path))["id"] == load_item(path).id
    assert load_item(path).location == str(path)
