"""Fixtures for the web app: a tiny model dir, the app served on 127.0.0.1 (free ports), real sample inputs."""

import os
import socket
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from testing_utils import save_image_dependent_model

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
EUROSAT_FOREST = DATA / "eurosat-ms" / "Forest" / "Forest_1.tif"
BEN_PATCH = DATA / "bigearthnet-v1" / "S2B_MSIL2A_20170924T93020_69_24"
SSL4EO = DATA / "ssl4eo-s12" / "s2a" / "0000200" / "20200604T054639_20200604T054831_T43RCP"
MAJOR_TOM = DATA / "major-tom-s2l2a" / "0U" / "0U_199R" / "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
ARTIFACTS = Path(os.environ.get("SPECTRAL_LLAVA_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
# tile of 64 px: a 64 px EuroSAT patch is one tile, a 120 px BigEarthNet patch 2 x 2 tiles (1.9x the footprint)
IMAGE_SIZE = 64
MAX_NEW_TOKENS = 12


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def zip_folder(folder: Path, archive: Path, prefix: str | None = None) -> Path:
    """Zip `folder`'s files under `prefix/` (default: the folder's name)."""
    prefix = prefix or folder.name
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{prefix}/{path.relative_to(folder)}")
    return archive


@pytest.fixture(scope="session")
def app_model_dir(tmp_path_factory):
    return save_image_dependent_model(tmp_path_factory.mktemp("models") / "tiny-app", image_size=IMAGE_SIZE)


@pytest.fixture(scope="session")
def app_session(app_model_dir):
    from spectral_llava.webapp import ModelSession

    return ModelSession(app_model_dir, max_new_tokens=MAX_NEW_TOKENS, device="cpu")


def _serve(session, tmp_path_factory, **options):
    from spectral_llava.webapp import AppOptions, SpectralApp, serve

    options = AppOptions(model=session.model_dir, port=free_port(), max_new_tokens=MAX_NEW_TOKENS,
                         work_root=str(tmp_path_factory.mktemp("app-work")), **options)
    app = SpectralApp(session, options)
    demo = app.build()
    url = serve(demo, options, block=False)
    return demo, url, app


@pytest.fixture(scope="session")
def app_server(app_session, tmp_path_factory):
    """(URL, SpectralApp) of the app served on 127.0.0.1 in this process."""
    demo, url, app = _serve(app_session, tmp_path_factory)
    yield url, app
    demo.close()


@pytest.fixture(scope="session")
def small_limit_server(app_session, tmp_path_factory):
    """The same model served with a 50 x 50 px scene limit."""
    demo, url, app = _serve(app_session, tmp_path_factory, max_scene_pixels=50 * 50)
    yield url, app
    demo.close()


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client

    return Client(app_server[0], verbose=False)


@pytest.fixture(scope="session")
def ben_zip(tmp_path_factory):
    return zip_folder(BEN_PATCH, tmp_path_factory.mktemp("zips") / f"{BEN_PATCH.name}.zip")


@pytest.fixture(scope="session")
def safe_zip(tmp_path_factory):
    """A zipped Level-2A SAFE product holding the Major-TOM crop's real bands as lossless JPEG2000, each under
    IMG_DATA/R10m, R20m or R60m by its native resolution, named as in a real product."""
    import rasterio

    product = MAJOR_TOM.name + ".SAFE"
    root = tmp_path_factory.mktemp("safe")
    img_data = root / product / "GRANULE" / "L2A_T33NZA_A036719_20220706T085611" / "IMG_DATA"
    for source in sorted(MAJOR_TOM.glob("B*.tif")):
        with rasterio.open(source) as dataset:
            pixels, profile = dataset.read(1), dataset.profile
        resolution = round(profile["transform"].a)
        for key in ("compress", "tiled", "interleave", "blockxsize", "blockysize", "predictor"):
            profile.pop(key, None)
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
        folder = img_data / f"R{resolution}m"
        folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / f"T33NZA_20220706T085611_{source.stem}_{resolution}m.jp2", "w", **profile) as out:
            out.write(pixels, 1)
    return zip_folder(root / product, root / "product.zip")


@pytest.fixture(scope="session")
def data():
    """The real sample inputs the tests use, and a helper that zips a folder."""
    return SimpleNamespace(forest=EUROSAT_FOREST, ben_patch=BEN_PATCH, major_tom=MAJOR_TOM, ssl4eo=SSL4EO,
                           zip_folder=zip_folder)


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

