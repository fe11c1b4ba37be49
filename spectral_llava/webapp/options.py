"""Options of `spectral-llava app`, defined once: a dataclass whose field metadata holds the help text, parsed by
transformers' `HfArgumentParser`. `AppOptions` is the app's whole configuration (`webapp.launch(AppOptions(model=
...))`), radiometric handling included. No gradio or torch import here: `--help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from spectral_llava.processing.options import RadiometryOptions


@dataclass(kw_only=True)
class AppOptions(RadiometryOptions):
    """What `launch` serves; the radiometric handling (`input_offset`, `input_scale`, `strict`) applies to every
    image the app reads, as `self.radiometry`."""

    model: str = field(metadata={"help": "Spectral-LLaVA model directory", "metavar": "DIR"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to listen on (127.0.0.1: this machine only; 0.0.0.0 for every interface)"})
    port: int = field(default=7860, metadata={"help": "port to listen on"})
    concurrency: int = field(default=1, metadata={
        "help": "model requests run at once; the others wait in gradio's queue"})
    max_new_tokens: int = field(default=64, metadata={
        "help": "tokens generated per answer: caption, labels, chat turn, each mapped tile"})
    max_scene_pixels: int | None = field(default=None, metadata={
        "help": "refuse inputs whose largest band has more pixels (default: 2048 x 2048)", "metavar": "N"})
    max_upload_mb: int = field(default=1024, metadata={"help": "largest upload accepted", "metavar": "MB"})
    max_unpacked_mb: int | None = field(default=None, metadata={
        "help": "largest total size a zip may unpack to (default: 2048)", "metavar": "MB"})
    work_root: str | None = field(default=None, metadata={
        "help": "folder for unpacked uploads and maps (default: a temporary folder removed at exit)",
        "metavar": "DIR"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("port", "concurrency", "max_new_tokens", "max_scene_pixels", "max_upload_mb", "max_unpacked_mb"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive integer")

    def limits(self):
        """The `webapp.inputs.InputLimits` of these options (their defaults where an option is None)."""
        from .inputs import InputLimits

        defaults = InputLimits()
        unpacked = self.max_unpacked_mb * 1024 ** 2 if self.max_unpacked_mb else defaults.max_unpacked_bytes
        return InputLimits(max_scene_pixels=self.max_scene_pixels or defaults.max_scene_pixels,
                           max_unpacked_bytes=unpacked)
