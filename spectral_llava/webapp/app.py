"""The gradio Blocks app: look at a Sentinel-2 input, caption it, classify it, chat about it, map a scene.

`build_app(session, options)` returns the Blocks; `launch(options)` loads the model once and serves it, both
configured by one `webapp.options.AppOptions`. Requests go through gradio's queue: everything that runs the model
shares one concurrency group (`options.concurrency`, default 1), reading inputs has its own. Analytics are off and
the page needs nothing from the internet (fonts shipped with gradio or the system's, Leaflet inlined into the map,
no basemap).

Stable API (gradio `api_name`), each taking one file (GeoTIFF, single band file or zip):
`/caption` -> str, `/classify` -> list of labels, `/map` -> the GeoJSON file of the tiles.
"""

from __future__ import annotations

import atexit
import functools
import html
import inspect
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from rasterio.errors import RasterioError  # noqa: E402

from spectral_llava.processing.image_processing_spectral_llava import MAX_FOOTPRINT_RATIO  # noqa: E402
from spectral_llava.scene.options import TASKS as MAP_TASKS  # noqa: E402

from .describe import InputReport, describe_input, input_footprint_ratio  # noqa: E402
from .inputs import InputError, available_samples, name_bands, new_work_dir, resolve_upload  # noqa: E402
from .model import ModelSession  # noqa: E402
from .options import AppOptions  # noqa: E402
from .tile_map import map_document, map_iframe, show_owned_parts  # noqa: E402

logger = logging.getLogger(__name__)

THEME = gr.themes.Default(font=(gr.themes.LocalFont("Source Sans Pro"), "ui-sans-serif", "system-ui", "sans-serif"),
                          font_mono=(gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"))
CSS = """
.band-table table { font-size: 0.8em; }
.band-table th, .band-table td { padding: 1px 8px !important; }
#caption-output textarea { font-size: 1.05em; opacity: 1 !important; color: var(--body-text-color) !important;
                           -webkit-text-fill-color: var(--body-text-color) !important; }
"""
QUICKLOOK_CACHE = 32


class PageError(gr.Error):
    """A message for the page (gradio shows it as an error toast; the server keeps serving)."""


PAGE_ERRORS = (InputError, ValueError, FileNotFoundError, RasterioError)


def tidy_paths(message: str, roots) -> str:
    """Shorten server-side paths under `roots` (upload and work folders) to their file names."""
    for root in roots:
        message = re.sub(re.escape(str(root).rstrip("/")) + r"/(?:[^/\s:'\"]+/)*", "", message)
    return message


def _page_errors(fn):
    """Turn bad-input errors of a SpectralApp handler into messages on the page, for plain and generator handlers
    alike; server-side folders are cut from the message."""
    def page_error(app, err):
        return PageError(tidy_paths(str(err), app.private_roots))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(app, *args, **kwargs):
            try:
                yield from fn(app, *args, **kwargs)
            except PAGE_ERRORS as err:
                raise page_error(app, err) from err
        return generator

    @functools.wraps(fn)
    def plain(app, *args, **kwargs):
        try:
            return fn(app, *args, **kwargs)
        except PAGE_ERRORS as err:
            raise page_error(app, err) from err
    return plain


def _message_text(content) -> str:
    """Text of a chatbot message content (a string, or gradio's list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return "".join(_message_text(part) for part in content)
    return str(content)


def markdown_text(text: str) -> str:
    """`text` shown as written in gr.Markdown: HTML-like parts (`<patch>_B02.tif`) and emphasis marks escaped."""
    return re.sub(r"([\\*_])", r"\\\1", html.escape(text, quote=False))


def footprint_markdown(report: InputReport) -> str:
    km = report.tile_px * 10 / 1000
    lines = [f"**Size** {report.width} x {report.height} px"
             + f" ({report.extent_m[1] / 1000:.2f} km x {report.extent_m[0] / 1000:.2f} km)"]
    lines.append(f"**CRS** {report.crs or 'none (not georeferenced)'}")
    if report.lonlat_bounds is not None:
        west, south, east, north = report.lonlat_bounds
        lines.append(f"**Footprint (WGS84)** W {west:.5f}, S {south:.5f}, E {east:.5f}, N {north:.5f}")
    rows, cols = report.tiles
    if report.footprint_ratio > MAX_FOOTPRINT_RATIO:
        lines.append(f"**Model tile** {report.tile_px} px = {km:g} km: this input spans {rows} x {cols} tiles "
                     f"({report.footprint_ratio:.1f}x the footprint), too large for one answer: use the Map tab")
    elif report.larger_than_one_tile:
        lines.append(f"**Model tile** {report.tile_px} px = {km:g} km: this input spans {rows} x {cols} tiles "
                     f"({report.footprint_ratio:.1f}x the footprint); one answer sees it resized to one tile, "
                     "the Map tab answers tile by tile")
    else:
        lines.append(f"**Model tile** {report.tile_px} px = {km:g} km: the input fits one tile")
    lines += [f"*{note}*" for note in report.notes]
    return "  \n".join(lines)


def bands_markdown(report: InputReport) -> str:
    rows = ["| band | status | native pixel | handling |", "|---|---|---|---|"]
    rows += [f"| {r['band']} | {r['status']} | {r['native pixel']} | {r['handling']} |" for r in report.bands]
    return "\n".join(rows)


def radiometry_markdown(report: InputReport) -> str:
    """The processor's `metadata["radiometry"]`: reflectance x 10000 = (raw + offset) x scale, and why."""
    radiometry = report.radiometry
    if not radiometry:
        return ("**Radiometry** not reported by this model's image processor: values are normalised as stored "
                "(reflectance x 10000)")
    text = (f"**Radiometry** reflectance x 10000 = (raw + {radiometry.get('offset')}) x {radiometry.get('scale')}, "
            f"from {radiometry.get('source')}")
    if radiometry.get("detail"):
        text += f" ({radiometry['detail']})"
    shown = ("offset", "scale", "source", "detail")
    extra = [f"{key.replace('_', ' ')}: {value}" for key, value in radiometry.items() if key not in shown and value]
    return text + "".join(f"  \n{line}" for line in extra)


class SpectralApp:
    """The handlers behind the page and the API, over one loaded model."""

    def __init__(self, session: ModelSession, options: AppOptions):
        self.session = session
        self.options = options
        self.limits = options.limits()
        self.work_root = Path(options.work_root or tempfile.mkdtemp(prefix="spectral-llava-app-"))
        if options.work_root is None:
            atexit.register(shutil.rmtree, self.work_root, True)
        self.samples = available_samples()
        self.private_roots = [self.work_root, self.work_root.resolve(), get_upload_folder()]
        self.quicklooks: dict[str, tuple | None] = {}  # source -> true-colour quicklook, for the map's background

    # -- inputs ------------------------------------------------------------------------------------------------

    def resolve(self, files) -> Path:
        return resolve_upload(files, self.work_root / "inputs", self.limits)

    def check_footprint(self, source: Path) -> None:
        """Refuse an input more than MAX_FOOTPRINT_RATIO times the model's footprint (the rule of
        `spectral-llava caption`): one answer would squash it into one image."""
        ratio = input_footprint_ratio(source, self.session.image_processor)
        if ratio > MAX_FOOTPRINT_RATIO:
            raise InputError(f"{source.name} covers {ratio:.1f}x the model's {self.session.tile_px / 100:g} km "
                             "footprint; one answer for it would squash it into one image: use the Map tab (API: "
                             "/map) or `spectral-llava map`")

    @staticmethod
    def uploads_of(files, state) -> list[str]:
        """The files of this upload. Every load empties the upload box (a box keeping them would add the next
        upload's files to them), so these are the new files; none when the band names field was submitted: then
        those of the last upload, kept in the page's state."""
        uploads = [str(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files or [])]
        return list(dict.fromkeys(uploads)) or list(state.get("uploads", []) if state else [])

    def _input(self, uploads: list[str], sample, band_names: str) -> Path:
        """The image path of a sample or of uploaded files; `band_names` names the bands of a multi-band GeoTIFF
        (a named copy is read)."""
        if sample:
            if sample not in self.samples:
                raise InputError(f"unknown sample {sample!r}")
            source = self.samples[sample]
        else:
            source = self.resolve(uploads)
        if band_names and band_names.strip():
            source = name_bands(source, band_names, self.work_root / "inputs")
        return source

    def load(self, files, sample, band_names: str = "", state=None):
        """Describe a new input: every panel shows it, or, when it cannot be read, the status line says why and
        every panel is cleared (no input stays loaded). Either way the upload box is emptied for the next upload;
        the state keeps the files, which band names submitted next apply to."""
        uploads = [] if sample else self.uploads_of(files, state)
        try:
            source = self._input(uploads, sample, band_names)
            report = describe_input(source, self.session.image_processor, self.session.radiometry)
        except PAGE_ERRORS as err:
            message = markdown_text(tidy_paths(str(err), self.private_roots))
            return ({"source": None, "uploads": uploads},
                    f"**Could not read the input:** {message}  \nNo input is open now: upload another file or pick "
                    "a sample.", None, None, "", "", "", "Load an input larger than one model tile to map it.",
                    gr.update(interactive=False), "", None, "", [], "", None, None)
        self.quicklooks[str(source)] = report.quicklook
        while len(self.quicklooks) > QUICKLOOK_CACHE:
            self.quicklooks.pop(next(iter(self.quicklooks)))
        missing = [row["band"] for row in report.bands if row["status"] in ("missing", "no data")]
        if missing:
            gr.Warning(f"{source.name}: band(s) {', '.join(missing)} missing or entirely no-data; filled with the "
                       "dataset mean and masked (see the band table)", duration=None)  # stays until dismissed
        can_map = report.larger_than_one_tile and report.crs is not None
        map_note = ("Map the input tile by tile; each tile is coloured by its first label."
                    if can_map else f"Mapping needs a georeferenced input larger than one model tile "
                                    f"({report.tile_px} px); this one is {report.width} x {report.height} px.")
        return ({"source": str(source), "uploads": uploads}, f"Loaded **{markdown_text(source.name)}**",
                report.true_colour, report.false_colour, footprint_markdown(report), bands_markdown(report),
                radiometry_markdown(report), map_note, gr.update(interactive=can_map), "", None, "", [], "", None, None)

    def load_upload(self, files, band_names, state):
        return self.load(files, None, band_names, state)

    def load_sample(self, sample):
        return self.load(None, sample)

    @staticmethod
    def _source(state) -> Path:
        if not state or not state.get("source"):
            raise InputError("load an image first: upload a file or pick a sample")
        return Path(state["source"])

    # -- model actions -----------------------------------------------------------------------------------------

    @_page_errors
    def page_caption(self, state) -> str:
        source = self._source(state)
        self.check_footprint(source)
        return self.session.caption(source)

    @_page_errors
    def page_classify(self, state):
        source = self._source(state)
        self.check_footprint(source)
        result = self.session.classify(source)
        if not result["labels"]:
            gr.Warning("the answer names no known land-cover class; see the raw answer")
        return [(label, label) for label in result["labels"]], result["text"]

    @_page_errors
    def page_chat(self, state, message: str, history: list):
        source = self._source(state)
        message = (message or "").strip()
        if not message:
            raise InputError("type a question about the image first")
        self.check_footprint(source)
        previous = [{"role": turn["role"], "content": _message_text(turn["content"])} for turn in history or []]
        shown = previous + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield shown, ""
        for answer in self.session.chat_stream(source, previous, message):
            shown[-1]["content"] = answer
            yield shown, ""

    def _map(self, source: Path, task: str, progress) -> tuple:
        """Map `source` into a fresh folder: (MapResult, GeoJSON path, GeoParquet path)."""
        from spectral_llava.scene.outputs import write_tiles

        if task not in MAP_TASKS:
            raise InputError(f"task must be one of {MAP_TASKS}, got {task!r}")
        folder = new_work_dir(self.work_root / "maps")
        stem = source.name.removesuffix(".zip")
        geojson = folder / f"{stem}-tiles.geojson"
        result = self.session.map_tiles(source, geojson, task=task, progress=progress)
        geoparquet = folder / f"{stem}-tiles.parquet"
        write_tiles(result.rows, result.crs, geoparquet, result.metadata)
        return result, geojson, geoparquet

    @_page_errors
    def page_map(self, state, task: str, progress=gr.Progress()):
        source = self._source(state)
        progress(0, desc="reading the scene")
        result, geojson, geoparquet = self._map(
            source, task, lambda done, total: progress((done, total), desc="mapping tiles", unit="tiles"))
        with open(geojson, encoding="utf-8") as f:
            shown = show_owned_parts(json.load(f), result)
        document = map_document(shown, self.quicklooks.get(str(source)))
        downloads = [str(geojson), str(geoparquet)] + ([str(result.overview)] if result.overview else [])
        counts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in result.counts.items())
        return map_iframe(document), downloads, f"**{len(result.rows)} tiles mapped** ({counts})"

    # -- stable API ----------------------------------------------------------------------------------------------

    @_page_errors
    def api_caption(self, file) -> str:
        source = self.resolve(file)
        self.check_footprint(source)
        return self.session.caption(source)

    @_page_errors
    def api_classify(self, file) -> list[str]:
        source = self.resolve(file)
        self.check_footprint(source)
        return self.session.classify(source)["labels"]

    @_page_errors
    def api_map(self, file, progress=gr.Progress()) -> str:
        source = self.resolve(file)
        _, geojson, _ = self._map(source, "classification",
                                  lambda done, total: progress((done, total), desc="mapping tiles", unit="tiles"))
        return str(geojson)

    # -- page ----------------------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        model_group = {"concurrency_id": "model", "concurrency_limit": self.options.concurrency}
        private = {"api_visibility": "private"}
        # uploads in gradio's cache are removed after a day, checked hourly
        with gr.Blocks(title="Spectral-LLaVA", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            gr.Markdown(f"## Spectral-LLaVA: Sentinel-2 imagery with a vision-language model\n"
                        f"Model `{self.session.model_dir}` · tile {self.session.tile_px} px at 10 m")
            state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    files = gr.File(label="GeoTIFF, several band files, or a zip (patch folder / SAFE product)",
                                    file_count="multiple", height=220, elem_id="upload")
                    band_names = gr.Textbox(label="band names of a multi-band GeoTIFF without band descriptions, "
                                                  "in file order (Enter reloads)", placeholder="B02,B03,B04,B08",
                                            elem_id="band-names")
                    sample = gr.Dropdown(choices=list(self.samples), value=None, label="or a shipped sample",
                                         elem_id="sample")
                    status = gr.Markdown("Upload an image or pick a sample.", elem_id="status")
                    footprint = gr.Markdown(elem_id="footprint")
                    radiometry = gr.Markdown(elem_id="radiometry")
                with gr.Column(scale=2):
                    with gr.Row():
                        true_colour = gr.Image(label="true colour (B04/B03/B02)", interactive=False, height=300,
                                               elem_id="true-colour")
                        false_colour = gr.Image(label="false colour (B08/B04/B03)", interactive=False, height=300,
                                                elem_id="false-colour")
                    bands = gr.Markdown(elem_id="bands", elem_classes="band-table")
            with gr.Tabs():
                with gr.Tab("Caption"):
                    caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                    caption_text = gr.Textbox(label="caption", lines=3, interactive=False, elem_id="caption-output")
                with gr.Tab("Classify"):
                    classify_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    labels = gr.HighlightedText(label="land-cover classes", show_legend=False,
                                                show_inline_category=False, elem_id="labels")
                    raw_answer = gr.Textbox(label="model answer", interactive=False, elem_id="classify-answer")
                with gr.Tab("Chat"):
                    chatbot = gr.Chatbot(label="chat about the image", height=320, elem_id="chat")
                    question = gr.Textbox(label="question", placeholder="[caption] What is in this image?",
                                          elem_id="question")
                    with gr.Row():
                        ask = gr.Button("Send", variant="primary")
                        clear = gr.Button("Clear")
                with gr.Tab("Map"):
                    map_note = gr.Markdown("Load an input larger than one model tile to map it.")
                    with gr.Row():
                        map_task = gr.Radio(list(MAP_TASKS), value="classification", label="per tile")
                        map_button = gr.Button("Map tiles", variant="primary", interactive=False,
                                               elem_id="map-button")
                    map_summary = gr.Markdown()
                    map_view = gr.HTML(elem_id="tile-map")
                    map_files = gr.File(label="tiles: GeoJSON (WGS84), GeoParquet (the scene's CRS), overview PNG",
                                        file_count="multiple", interactive=False, elem_id="map-files")
            with gr.Row(visible=False):
                api_file = gr.File()
                api_text = gr.Textbox()
                api_labels = gr.JSON()
                api_geojson = gr.File()
                api_buttons = [gr.Button() for _ in range(3)]

            loaded = [state, status, true_colour, false_colour, footprint, bands, radiometry, map_note, map_button,
                      caption_text, labels, raw_answer, chatbot, map_summary, map_view, files]
            reading = {"concurrency_id": "inputs", "concurrency_limit": 2, **private}
            for trigger in (files.upload, band_names.submit):
                trigger(self.load_upload, [files, band_names, state], loaded, **reading)
            sample.select(self.load_sample, sample, loaded, **reading)
            caption_button.click(self.page_caption, state, caption_text, **model_group, **private)
            classify_button.click(self.page_classify, state, [labels, raw_answer], **model_group, **private)
            for trigger in (question.submit, ask.click):
                trigger(self.page_chat, [state, question, chatbot], [chatbot, question], **model_group, **private)
            clear.click(lambda: ([], ""), None, [chatbot, question], **private)
            map_button.click(self.page_map, [state, map_task], [map_view, map_files, map_summary], **model_group,
                             **private)
            api_buttons[0].click(self.api_caption, api_file, api_text, api_name="caption", **model_group)
            api_buttons[1].click(self.api_classify, api_file, api_labels, api_name="classify", **model_group)
            api_buttons[2].click(self.api_map, api_file, api_geojson, api_name="map", **model_group)
        demo.queue(default_concurrency_limit=self.options.concurrency)
        return demo


def build_app(session: ModelSession, options: AppOptions) -> gr.Blocks:
    return SpectralApp(session, options).build()


class PortInUse(ValueError):
    """The port asked for is taken; the message names the flag that picks another."""

    def __init__(self, options: AppOptions):
        super().__init__(f"port {options.port} on {options.host} is already in use (another app or server); pass "
                         f"--port N with a free port, e.g. --port {options.port + 1}")


def check_port(options: AppOptions) -> None:
    """Raise PortInUse when options.host:options.port cannot be bound (the probe gradio makes before serving)."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((options.host, options.port))
        except OSError as err:
            raise PortInUse(options) from err


def serve(demo: gr.Blocks, options: AppOptions, block: bool = True) -> str:
    """Serve built Blocks on options.host:options.port (offline theme, errors shown in the page); returns the URL.
    With block=False the server runs in a background thread (demo.close() stops it). A port taken in the meantime
    is PortInUse, not gradio's OSError about its own settings."""
    check_port(options)
    try:
        _, url, _ = demo.launch(server_name=options.host, server_port=options.port, prevent_thread_lock=not block,
                                show_error=True, ssr_mode=False, pwa=False, mcp_server=False, theme=THEME, css=CSS,
                                max_file_size=f"{options.max_upload_mb}mb", footer_links=["api", "gradio"])
    except OSError as err:
        if "port" not in str(err):
            raise
        raise PortInUse(options) from None
    return url


def launch(options: AppOptions, block: bool = True):
    """Load the model once and serve the app; returns (Blocks, local URL) once the server stops (block=True) or
    at once (block=False). A port in use is refused before the model loads (PortInUse)."""
    check_port(options)
    session = ModelSession(options.model, max_new_tokens=options.max_new_tokens, radiometry=options.radiometry)
    demo = build_app(session, options)
    logger.info("serving %s on http://%s:%d (Ctrl+C stops)", options.model, options.host, options.port)
    return demo, serve(demo, options, block=block)
