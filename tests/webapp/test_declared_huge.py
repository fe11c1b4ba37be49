"""The web app refuses uploads declaring 200,000 x 200,000 pixels (a sparse GeoTIFF; a zipped band folder whose B02
is a JPEG2000 header) from their headers, on upload and through the API, with little memory; it keeps serving."""

import re

import pytest
from declared_huge import refused_lightly, write_declared_huge_jp2, write_sparse_geotiff
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from spectral_llava.webapp.inputs import InputError, resolve_upload

OVER_THE_SERVERS_LIMIT = ("declares 200000 x 200000 pixels, over the limit of this server (spectral-llava app "
                          "--max-scene-pixels): 4,194,304 pixels; use `spectral-llava map` on the command line for "
                          "whole scenes")


def huge_band_folder_zip(tmp_path, data):
    folder = tmp_path / "patch"
    folder.mkdir()
    for band in ("B03", "B04"):
        (folder / f"{band}.tif").write_bytes((data.major_tom / f"{band}.tif").read_bytes())
    write_declared_huge_jp2(folder / "B02.jp2")
    return data.zip_folder(folder, tmp_path / "patch.zip")


def test_upload_is_refused_from_the_headers(tmp_path, data):
    huge = write_sparse_geotiff(tmp_path / "huge.tif")
    refused = refused_lightly(lambda: resolve_upload([str(huge)], tmp_path / "work"), "", InputError)
    assert str(refused.value) == f"huge.tif {OVER_THE_SERVERS_LIMIT}"
    archive = huge_band_folder_zip(tmp_path, data)
    refused = refused_lightly(lambda: resolve_upload([str(archive)], tmp_path / "work"), "", InputError)
    assert str(refused.value) == f"B02.jp2 {OVER_THE_SERVERS_LIMIT}"


@pytest.mark.parametrize("api_name", ["/caption", "/classify", "/map"])
def test_api_refuses_and_keeps_serving(client, tmp_path, data, api_name):
    huge = write_sparse_geotiff(tmp_path / "huge.tif")
    archive = huge_band_folder_zip(tmp_path, data)
    for upload, name in ((huge, "huge.tif"), (archive, "B02.jp2")):
        refused_lightly(lambda: client.predict(handle_file(str(upload)), api_name=api_name),
                        f"{re.escape(f'{name} {OVER_THE_SERVERS_LIMIT}')}$", AppError)
    assert client.predict(handle_file(str(data.forest)), api_name="/classify") is not None
