"""One check for a lent CUDA GPU, in about 8 minutes: the paper's shapes in bf16, LoRA and QLoRA memory against the
memory table, decoding and tower throughput.

    python benchmarks/gpu_check.py --output DIR          # one CUDA GPU (H100 / H200), --budget 480 seconds
    python benchmarks/gpu_check.py --tiny --output DIR   # the same code with tiny shapes on the CPU, no compilation

Sections, in this order (each fails soft: its error is recorded and the next one runs):
- `train_bf16`: stage 2 on SpectralGPT ViT-B/8 + a Llama-3-8B-shaped LLM (benchmarks/configs/llama3_8b.json,
  random bf16 weights made on the GPU), LoRA r=128 on attention and MLP, trained projector, 1024 visual + 128 text
  tokens, batch 1, Adam, bf16 autocast: steps/s and peak GPU memory without and with gradient checkpointing,
  beside the estimate of scripts/memory_estimate.py (docs/training.md, "Memory for Llama-3-8B") for that setting.
- `qlora`: the same with the LLM loaded in 4-bit NF4 and in 8 bit through bitsandbytes (train/quantization.py),
  from the random weights saved to a temporary folder; skipped with the reason when that cannot run.
- `tower`: images/s of the bf16 tower at batch 64, and the projected time for one 10980 x 10980 px tile.
- `decode`: greedy tokens/s from a 1152-token prompt (with its image), batch 1 and 8: SDPA with the dynamic cache,
  then `cache_implementation="static"` with generate's torch.compile of the decoding steps.
Each section gets a share of --budget (time left over passes on); a setting that would start after its section's
share is skipped and says so. DIR/gpu_check.json and DIR/gpu_check.md are rewritten after every setting.

Imports only the model code (no readers, no scene code): runs from a plain checkout (not installed) with torch,
transformers, peft, accelerate and safetensors (bitsandbytes for QLoRA), without rasterio.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import torch
from transformers.generation import BaseStreamer

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
for folder in (REPO, BENCHMARKS, os.path.join(REPO, "scripts")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import memory_estimate  # noqa: E402
from gpu_check_report import SHARE_SPENT, Report, describe  # noqa: E402
from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import (  # noqa: E402
    SpectralGPTConfig,
    SpectralLlavaConfig,
    num_visual_tokens,
)
from spectral_llava.modeling_spectral_llava.modeling_spectral_llava import (  # noqa: E402
    SpectralLlavaForConditionalGeneration,
)
from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel  # noqa: E402
from spectral_llava.train.lora import lora_config  # noqa: E402
from spectral_llava.train.options import FinetuneOptions  # noqa: E402
from spectral_llava.train.quantization import quantization_config  # noqa: E402

GiB = 1024 ** 3
FULL_TILE = 10980  # px of a Sentinel-2 tile on the 10 m grid
WARMUP = 1  # untimed steps (and generate calls) before the timed ones
PROMPT_PREFIX = 4  # text tokens before the image's placeholders; the rest of the text follows it
# share of --budget per section, in running order
SECTION_SHARES = {"train_bf16": 0.16, "qlora": 0.36, "tower": 0.05, "decode": 0.43}


@dataclass
class GpuCheckOptions:
    """Options of benchmarks/gpu_check.py."""

    output: str = field(metadata={"help": "folder for gpu_check.json and gpu_check.md", "metavar": "DIR"})
    tiny: bool = field(default=False, metadata={"help": "tiny shapes on the CPU, no compilation (seconds)"})
    budget: float = field(default=480.0, metadata={"help": "seconds for all sections together"})
    steps: int | None = field(default=None, metadata={
        "help": "timed training steps, generate calls and (x3) tower batches per setting (default 3; --tiny 1)"})
    new_tokens: int | None = field(default=None, metadata={
        "help": "tokens generated per decoding call (default 32; --tiny 4)"})
    llm_config: str = field(default=memory_estimate.LLAMA3_8B_CONFIG, metadata={
        "help": "LlamaConfig JSON of the LLM (default Llama-3-8B's shapes)", "metavar": "JSON"})

    def __post_init__(self):
        if self.steps is None:
            self.steps = 1 if self.tiny else 3
        if self.new_tokens is None:
            self.new_tokens = 4 if self.tiny else 32
        for name in ("budget", "steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} {getattr(self, name)}: expected a positive number")
        if self.new_tokens < 2:
            raise ValueError(f"--new-tokens {self.new_tokens}: expected at least 2 (the decode rate is taken over "
                             "the tokens after the first)")


@dataclass
class Shapes:
    """What is measured: device, model configs, sequence, batch sizes and LoRA."""

    device: torch.device
    llm: object  # LlamaConfig
    vision: SpectralGPTConfig
    text_tokens: int  # text tokens of a sequence besides the visual ones
    answer_tokens: int  # the last text tokens, the ones with labels
    tower_batch: int
    decode_batches: tuple
    compile: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float

    def llava_config(self) -> SpectralLlavaConfig:
        """The default visual-token layout (`tokens`, linear projector); `<image>` is the LLM's last token id."""
        llm = copy.deepcopy(self.llm)
        return SpectralLlavaConfig(vision_config=copy.deepcopy(self.vision), text_config=llm,
                                   image_token_id=llm.vocab_size - 1)


def paper_shapes(options: GpuCheckOptions) -> Shapes:
    from transformers import LlamaConfig

    lora = FinetuneOptions()
    return Shapes(device=torch.device("cuda"), llm=LlamaConfig.from_json_file(options.llm_config),
                  vision=SpectralGPTConfig(), text_tokens=128, answer_tokens=32, tower_batch=64, decode_batches=(1, 8),
                  compile=True, lora_r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout)


def tiny_shapes() -> Shapes:
    from transformers import LlamaConfig

    llm = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    vision = SpectralGPTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    return Shapes(device=torch.device("cpu"), llm=llm, vision=vision, text_tokens=16, answer_tokens=4, tower_batch=4,
                  decode_batches=(1, 8), compile=False, lora_r=8, lora_alpha=16, lora_dropout=0.05)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> dict:
    """Peak bytes allocated by tensors and reserved by the caching allocator since the last reset, in GiB."""
    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None, "memory_note": "no peak-memory counter on CPU"}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB}


def build_model(shapes: Shapes) -> SpectralLlavaForConditionalGeneration:
    """Random bf16 weights created directly on the device (never on the CPU first), SDPA attention."""
    torch.manual_seed(0)
    with torch.device(shapes.device):
        return SpectralLlavaForConditionalGeneration._from_config(
            shapes.llava_config(), dtype=torch.bfloat16, attn_implementation="sdpa")


def sequence_batch(shapes: Shapes, batch: int, labels: bool) -> dict:
    """Random text around one image's `<image>` placeholders per sequence, and random pixels; with `labels`, the
    last `answer_tokens` are the targets (the prompt and image are -100, as the collator masks them)."""
    config = shapes.llava_config()
    visual = num_visual_tokens(config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.image_token_id, (batch, visual + shapes.text_tokens), generator=generator)
    ids[:, PROMPT_PREFIX:PROMPT_PREFIX + visual] = config.image_token_id
    vision = shapes.vision
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(batch, vision.num_channels, vision.image_size, vision.image_size,
                                          generator=generator)}
    if labels:
        inputs["labels"] = torch.full_like(ids, -100)
        inputs["labels"][:, -shapes.answer_tokens:] = ids[:, -shapes.answer_tokens:]
    else:
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    return {name: tensor.to(shapes.device) for name, tensor in inputs.items()}


def train_setting(shapes: Shapes, weights: str, checkpointing: bool) -> dict:
    visual = num_visual_tokens(shapes.llava_config())
    return {"llm_weights": weights, "gradient_checkpointing": checkpointing, "lora_r": shapes.lora_r,
            "sequence_tokens": visual + shapes.text_tokens, "visual_tokens": visual, "batch": 1,
            "hidden": shapes.llm.hidden_size, "layers": shapes.llm.num_hidden_layers}


def memory_table_estimate(shapes: Shapes, weights: str, checkpointing: bool) -> dict:
    """The memory table's cell for this setting, computed by scripts/memory_estimate.py for these exact shapes."""
    counts = memory_estimate.count_parameters(shapes.lora_r, shapes.llm, shapes.vision)
    sequence = num_visual_tokens(shapes.llava_config()) + shapes.text_tokens
    column = "1 GPU, checkpointing" if checkpointing else "1 GPU"
    rows = memory_estimate.estimate(counts, sequence, micro_batch=1)["rows"]
    return {"source": "scripts/memory_estimate.py (docs/training.md, Memory for Llama-3-8B)",
            "table_row": weights, "table_column": column, "peak_gib": rows[weights][column] / GiB}


def add_lora(model, shapes: Shapes, quantized: bool):
    """Stage 2's preparation (train/trainer.py run_stage + train/finetune.py prepare_model), checkpointing off."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model.freeze_vision_tower()
    model.multi_modal_projector.float()
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.requires_grad_(False)
    with torch.device(shapes.device):  # the adapters too are made where they train
        return get_peft_model(model, lora_config(shapes.lora_r, shapes.lora_alpha, shapes.lora_dropout))


def measure_training(model, shapes: Shapes, steps: int, deadline: float) -> dict:
    """Adam steps on one sequence under bf16 autocast (what `--bf16` gives): the median step time and the peak memory
    from the trained model's weights on (optimizer states and activations included)."""
    batch = sequence_batch(shapes, 1, labels=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    model.train()
    free_memory(shapes.device)
    seconds = []
    for step in range(WARMUP + steps):
        if step > WARMUP and time.monotonic() > deadline:
            break
        synchronize(shapes.device)
        start = time.perf_counter()
        with torch.autocast(shapes.device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(shapes.device)
        seconds.append(time.perf_counter() - start)
    step_s = statistics.median(seconds[WARMUP:])
    measurement = {"steps_per_s": 1 / step_s, "step_s": step_s, "timed_steps": len(seconds) - WARMUP,
                   "loss": loss.item(), **peak_memory(shapes.device)}
    del optimizer
    model.zero_grad(set_to_none=True)
    return measurement


def train_rows(section, model, shapes: Shapes, weights: str, steps: int) -> None:
    """Without, then with gradient checkpointing (non-reentrant, as the Trainer enables it) on the same model."""
    for checkpointing in (False, True):
        def measure():
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return measure_training(model, shapes, steps, section.deadline)

        section.measure(train_setting(shapes, weights, checkpointing), measure,
                        memory_table_estimate(shapes, weights, checkpointing))


def train_bf16_section(section, shapes: Shapes, options: GpuCheckOptions) -> None:
    model = add_lora(build_model(shapes), shapes, quantized=False)
    train_rows(section, model, shapes, "bf16", options.steps)


def bitsandbytes_or_reason(shapes: Shapes, bits: int):
    """(BitsAndBytesConfig, None) as train/quantization.py makes it for --load-in-{bits}bit, or (None, why not)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # an import that fails for any reason means QLoRA cannot run here
        return None, f"bitsandbytes does not import: {type(error).__name__}: {error}"
    try:
        return quantization_config(FinetuneOptions(**{f"load_in_{bits}bit": True})), None
    except ValueError as error:
        return None, str(error)


def weights_folder(size: int) -> str:
    """A temporary folder with room for `size` bytes (plus a tenth): RAM-backed /dev/shm first, else the temp dir."""
    candidates = [folder for folder in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(folder)]
    for folder in candidates:
        if _free_bytes(folder) > 1.1 * size:
            return tempfile.mkdtemp(prefix="gpu-check-", dir=folder)
    raise OSError(f"none of {', '.join(candidates)} has {1.1 * size / GiB:.1f} GiB free for the bf16 weights the "
                  "quantized models load from")


def _free_bytes(folder: str) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def qlora_section(section, shapes: Shapes, options: GpuCheckOptions) -> None:
    """4-bit NF4, then 8 bit: the random bf16 weights are saved once and loaded quantized by `from_pretrained`, as
    the training loader does (modeling_spectral_llava/tools/loading.py)."""
    import shutil

    configs = {bits: bitsandbytes_or_reason(shapes, bits) for bits in (4, 8)}
    for bits, (config, reason) in configs.items():
        if config is None:
            unmeasured(section, shapes, bits, "skipped", reason)
    if all(config is None for config, _ in configs.values()):
        return
    model = build_model(shapes)
    folder = weights_folder(sum(p.numel() * p.element_size() for p in model.parameters()))
    try:
        model.save_pretrained(folder)
        del model
        free_memory(shapes.device)
        for bits, (config, _) in configs.items():
            if config is None:
                continue
            if time.monotonic() > section.deadline:
                unmeasured(section, shapes, bits, "skipped", SHARE_SPENT)
                continue
            try:
                model = SpectralLlavaForConditionalGeneration.from_pretrained(
                    folder, dtype=torch.bfloat16, quantization_config=config, device_map={"": device_index(shapes)})
                model = add_lora(model, shapes, quantized=True)
            except Exception as error:  # fail soft: the other precision still runs
                unmeasured(section, shapes, bits, "error", describe(error))
                continue
            train_rows(section, model, shapes, f"{bits}-bit", options.steps)
            del model
            free_memory(shapes.device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unmeasured(section, shapes: Shapes, bits: int, status: str, reason: str) -> None:
    for checkpointing in (False, True):
        section.unmeasured(train_setting(shapes, f"{bits}-bit", checkpointing), status, reason)


def device_index(shapes: Shapes):
    """`from_pretrained`'s device_map target: the GPU's index (bitsandbytes loads onto one GPU), or "cpu"."""
    return (shapes.device.index or 0) if shapes.device.type == "cuda" else "cpu"


def tower_section(section, shapes: Shapes, options: GpuCheckOptions) -> None:
    """The frozen tower alone in bf16 (inference mode) at the batch `map` feeds it, and one full tile's windows."""
    vision = shapes.vision
    torch.manual_seed(0)
    with torch.device(shapes.device):
        tower = SpectralGPTVisionModel._from_config(copy.deepcopy(vision), dtype=torch.bfloat16,
                                                    attn_implementation="sdpa").eval()
    windows = math.ceil(FULL_TILE / vision.image_size) ** 2
    setting = {"batch": shapes.tower_batch, "image": f"{vision.num_channels} x {vision.image_size} x "
               f"{vision.image_size}", "dtype": "bf16", "attention": "sdpa", "tile_px": FULL_TILE,
               "tile_windows": windows}

    def measure():
        pixels = torch.randn(shapes.tower_batch, vision.num_channels, vision.image_size, vision.image_size,
                             dtype=torch.bfloat16, device=shapes.device)
        seconds = []
        with torch.inference_mode():
            for step in range(WARMUP + 3 * options.steps):
                if step > WARMUP and time.monotonic() > section.deadline:
                    break
                synchronize(shapes.device)
                start = time.perf_counter()
                tower(pixels)
                synchronize(shapes.device)
                seconds.append(time.perf_counter() - start)
        images_per_s = shapes.tower_batch / statistics.median(seconds[WARMUP:])
        return {"images_per_s": images_per_s, "batch_s": shapes.tower_batch / images_per_s,
                "timed_batches": len(seconds) - WARMUP, "projected_tile_s": windows / images_per_s,
                **peak_memory(shapes.device)}

    section.measure(setting, measure)


class TokenClock(BaseStreamer):
    """A generate streamer that notes when each batch of tokens arrives: the prompt, then one per decoding step (the
    tokens reach the host at every step anyway, for the stopping check)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def timed_generate(model, inputs: dict, new_tokens: int, generate_options: dict) -> dict:
    """One greedy `generate`: its seconds, the prefill (prompt to first token) and the seconds per later token."""
    clock = TokenClock()
    synchronize(model.device)
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, streamer=clock, **generate_options)
    synchronize(model.device)
    total = time.perf_counter() - start
    tokens = clock.times[1:]  # times[0]: the prompt handed over before the prefill
    return {"generate_s": total, "prefill_s": tokens[0] - start, "new_tokens": len(tokens),
            "token_s": (tokens[-1] - tokens[0]) / (len(tokens) - 1)}


def measure_decoding(model, inputs: dict, options: GpuCheckOptions, generate_options: dict, deadline: float) -> dict:
    """The first call (warm-up; with the static cache it compiles the decoding step), then timed calls (medians):
    tokens/s over the whole call and decode tokens/s over the steps after the first token."""
    batch = inputs["input_ids"].shape[0]
    free_memory(model.device)
    first_s = timed_generate(model, inputs, options.new_tokens, generate_options)["generate_s"]
    calls = []
    for call in range(options.steps):
        if call and time.monotonic() > deadline:
            break
        calls.append(timed_generate(model, inputs, options.new_tokens, generate_options))
    median = {key: statistics.median(call[key] for call in calls) for key in calls[0]}
    return {"tokens_per_s": batch * median["new_tokens"] / median["generate_s"],
            "decode_tokens_per_s": batch / median["token_s"], "ms_per_step": 1000 * median["token_s"],
            "prefill_s": median["prefill_s"], "generate_s": median["generate_s"], "first_call_s": first_s,
            "new_tokens": median["new_tokens"], "timed_calls": len(calls), **peak_memory(model.device)}


def decode_section(section, shapes: Shapes, options: GpuCheckOptions) -> None:
    model = build_model(shapes).eval()
    model.generation_config.eos_token_id = None  # random weights: always generate --new-tokens
    model.generation_config.pad_token_id = 0
    prompt_tokens = num_visual_tokens(model.config) + shapes.text_tokens
    compile_s = 0.0  # the last compiled setting's first call: what the next compiled one will need
    for cache in ("dynamic", "static"):
        compiled = cache == "static" and shapes.compile
        generate_options = {"disable_compile": not compiled}
        if cache == "static":
            generate_options["cache_implementation"] = "static"
        for batch in shapes.decode_batches:
            setting = {"batch": batch, "prompt_tokens": prompt_tokens, "new_tokens": options.new_tokens,
                       "attention": "sdpa", "cache": cache, "torch_compile": compiled}
            inputs = sequence_batch(shapes, batch, labels=False)
            measured = section.measure(setting, lambda: measure_decoding(model, inputs, options, generate_options,
                                                                         section.deadline),
                                       needs_s=compile_s if compiled else 0.0)
            if compiled and measured:
                compile_s = measured["first_call_s"]
            free_memory(shapes.device)


SECTIONS = {"train_bf16": train_bf16_section, "qlora": qlora_section, "tower": tower_section,
            "decode": decode_section}
TITLES = {"train_bf16": "Stage-2 training, bf16 LoRA", "qlora": "Stage-2 training, QLoRA",
          "tower": "Tower over a scene", "decode": "Decoding"}


def run_gpu_check(options: GpuCheckOptions) -> dict:
    """Every section in turn; returns the report's data (also in OUTPUT/gpu_check.json and gpu_check.md)."""
    warnings.simplefilter("ignore")
    if not options.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU (torch sees none); --tiny runs the same code on the CPU")
    shapes = tiny_shapes() if options.tiny else paper_shapes(options)
    report = Report(options.output, "tiny" if options.tiny else "gpu", shapes.device, options.budget, REPO)
    start, share = time.monotonic(), 0.0
    for name, function in SECTIONS.items():
        share += SECTION_SHARES[name]
        section = report.section(name, TITLES[name], deadline=start + share * options.budget)
        if time.monotonic() > section.deadline:  # the sections before it overran
            section.skip(SHARE_SPENT)
        else:
            try:
                function(section, shapes, options)
            except Exception as error:  # fail soft: record it and go on with the next section
                section.fail(error)
        free_memory(shapes.device)
        section.done()
    return report.finish()


def main(argv=None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(GpuCheckOptions, description=__doc__.split("\n\n")[0])
    (options,) = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    data = run_gpu_check(options)
    print(open(os.path.join(options.output, "gpu_check.md")).read())
    return 0 if all(section["status"] != "error" for section in data["sections"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
