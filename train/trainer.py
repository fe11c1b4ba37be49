"""The training loop shared by stage 1 (`spectral_llava.train.align`) and stage 2 (`spectral_llava.train.finetune`).

One `transformers.Trainer` setup; a `Stage` supplies what differs: which records, which parameters train, and what
is exported at the end. Runs under `accelerate launch` (CPU, one or many GPUs, FSDP, DeepSpeed) or in-process.

Outputs in OUTPUT_DIR: `checkpoint-N/` (trainable weights only, optimizer, scheduler, RNG, trainer state, and
`hyperparameters.json`), `hyperparameters.json`, `logs/loss.csv`, `logs/tensorboard/`, `logs/loss_curve.png`,
`train_summary.json`, plus the stage's exported model(s), each with a `provenance.json` that appends this stage.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from spectral_llava.inference.feature_cache import FeatureCache, feature_fingerprint, tower_encoder
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor
from spectral_llava.modeling_spectral_llava.tools.model_card import read_provenance
from spectral_llava.modeling_spectral_llava.tools.options import prefer_hyphens
from spectral_llava.processing.radiometry_settings import RadiometrySettings
from spectral_llava.spectral_inst.dataset import dataset_band_names, load_build_info, load_split, resolve_image_path
from spectral_llava.utils.fileio import atomic_write_json, write_file_atomically

from .data import SpectralLlavaCollator, dataset_radiometry
from .options import StagePaths, TrainOptions
from .quantization import fsdp_enabled, quantization_config

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS = "trainable.safetensors"
HYPERPARAMETERS = "hyperparameters.json"
# what a run writes into --output besides its checkpoint-N folders
RUN_OUTPUTS = ("logs", "model", "adapter", "merged", HYPERPARAMETERS, "train_summary.json")


@dataclass
class Stage:
    """What one training stage changes in the shared loop."""

    name: str
    subset: str  # build-dataset output folder: "alignment" or "instructions"
    options: type[TrainOptions]  # the stage's options dataclass (its defaults are the paper recipe)
    select: Callable  # (dataset, options) -> dataset of the records to train on
    prepare: Callable  # (model, options) -> model with only the stage's parameters trainable
    export: Callable  # (model, processor, output_dir, options, provenance) -> {name: path}


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().cpu().contiguous() for name, param in model.named_parameters() if param.requires_grad}


class SpectralLlavaTrainer(Trainer):
    """A Trainer whose checkpoints hold only the trainable weights (the projector, LoRA): frozen ones never change."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        trainable = trainable_state_dict(model)
        if state_dict:
            trainable = {name: state_dict[name].cpu().contiguous() for name in trainable if name in state_dict}
        write_file_atomically(os.path.join(output_dir, TRAINABLE_WEIGHTS),
                              lambda tmp: save_file(trainable, tmp, metadata={"format": "pt"}))
        write_file_atomically(os.path.join(output_dir, "training_args.bin"), lambda tmp: torch.save(self.args, tmp))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        path = os.path.join(resume_from_checkpoint, TRAINABLE_WEIGHTS)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {resume_from_checkpoint} is not a checkpoint of this trainer")
        model = self.accelerator.unwrap_model(model or self.model)
        weights = load_file(path)
        expected = set(trainable_state_dict(model))
        if set(weights) != expected:
            raise ValueError(f"{path} holds other weights than the trainable ones of this stage: "
                             f"missing {sorted(expected - set(weights))[:3]}, extra {sorted(set(weights) - expected)[:3]}")
        model.load_state_dict(weights, strict=False)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Restore optimizer and scheduler, then set the learning rate that THIS run's schedule gives at the
        checkpoint's step: the cosine schedule is built for this run's total (a resumed run with a larger
        --max-steps extends it), while the optimizer state still holds the old schedule's last rate (0.0 at its end)."""
        super()._load_optimizer_and_scheduler(checkpoint)
        scheduler = self.lr_scheduler
        if checkpoint is None or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        for group, base_lr, lr_lambda in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base_lr * lr_lambda(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class LossLogger(TrainerCallback):
    """Loss to `logs/loss.csv` and TensorBoard; the hyper-parameters JSON into every checkpoint."""

    FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm")

    def __init__(self, output_dir: str, hyperparameters: dict):
        self.log_dir = Path(output_dir) / "logs"
        self.hyperparameters = hyperparameters
        self.writer = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir / "tensorboard"))
        # rewritten from the trainer state, so that a resumed run continues the file without duplicates
        with open(self.log_dir / "loss.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            for entry in state.log_history:
                if "loss" in entry:
                    writer.writerow(self._row(entry))

    def _row(self, logs: dict) -> dict:
        return {"step": logs.get("step"), "epoch": logs.get("epoch"), "loss": logs.get("loss"),
                "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = self._row({**logs, "step": state.global_step})
        with open(self.log_dir / "loss.csv", "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS).writerow(row)
        for key in ("loss", "learning_rate", "grad_norm"):
            if row[key] is not None:
                self.writer.add_scalar(f"train/{key}", row[key], state.global_step)
        self.writer.flush()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            atomic_write_json(checkpoint / HYPERPARAMETERS, self.hyperparameters)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()


def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot([step for step, _ in points], [loss for _, loss in points], marker="." if len(points) < 50 else None)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (answer tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    write_file_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


# transformers 5.2x renamed gradient checkpointing to activation checkpointing and warns on the old argument names;
# earlier 5.x releases (5.17 on the GPU machines) know only the old ones
CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                 else "gradient_checkpointing")


def training_arguments(options: TrainOptions, output_dir: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        learning_rate=options.lr,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps if options.max_steps is not None else -1,
        optim="adamw_torch",
        weight_decay=0.0,  # AdamW without decay is Adam, the paper's optimizer
        lr_scheduler_type="cosine",
        warmup_steps=options.warmup_ratio,
        logging_steps=options.logging_steps,
        save_strategy="steps",
        save_steps=options.save_steps,
        seed=options.seed,
        data_seed=options.seed,
        bf16=options.bf16,
        **{CHECKPOINTING: options.gradient_checkpointing, f"{CHECKPOINTING}_kwargs": {"use_reentrant": False}},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        report_to="none",
        # without a GPU, `accelerate launch --multi_gpu --num_processes N` (torchrun) gives N gloo CPU processes
        use_cpu=torch.accelerator.current_accelerator() is None,
    )


def cache_tower_features(records, image_roots: dict, model, processor, options: TrainOptions, args,
                         radiometry: RadiometrySettings | None = None, band_names=None):
    """The feature cache of every image of `records` read with the radiometric handling `radiometry` and the
    dataset's `band_names` (built on the main process first), or None without `--cache-features`."""
    if not options.cache_features:
        return None
    images = {}
    for record in records:
        images.setdefault(record["patch_id"], resolve_image_path(record["image"], image_roots))
    fingerprint = feature_fingerprint(model, processor.image_processor, radiometry, band_names)
    with args.main_process_first(desc="feature cache", local=False):
        model.vision_tower.to(args.device)
        return FeatureCache(options.cache_features, fingerprint).build(
            images, tower_encoder(model, processor.image_processor, radiometry, band_names),
            batch_size=options.batch_size)


def run_hyperparameters(stage: Stage, model, model_dir: str, dataset_dir: str, records: int,
                        options: TrainOptions, args) -> dict:
    return {
        "stage": stage.name, "model": model_dir, "dataset": dataset_dir, "records": records,
        **dataclasses.asdict(options), "world_size": args.world_size,
        "effective_batch_size": options.batch_size * options.grad_accum * args.world_size,
        "optimizer": "Adam (torch AdamW, weight_decay=0)", "lr_scheduler": "cosine",
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }


def load_training_model(model_dir: str, quantization=None):
    """(model, processor) of the starting model dir, left on CPU for Trainer to place, in the dtype the dir is stored
    in (bfloat16 for Llama-3); in float32 under FSDP (a wrapped block is one flat parameter of one dtype, and the
    LoRA and projector weights train in float32); with `quantization`, 8/4-bit LLM weights on this process's GPU."""
    if quantization is not None:
        return load_model_and_processor(model_dir, device=None, dtype=torch.bfloat16, quantization=quantization)
    return load_model_and_processor(model_dir, device=None, dtype=torch.float32 if fsdp_enabled() else "auto")


def checkpoint_to_resume(output_dir: str, resume: bool) -> str | None:
    if not resume:
        return None
    checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", output_dir)
    return checkpoint


def previous_run_outputs(output_dir) -> list[str]:
    """The names of what an earlier training run left in `output_dir` (checkpoint-N, logs, models, summaries)."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir)
                  if name in RUN_OUTPUTS or re.fullmatch(r"checkpoint-\d+", name))


def check_output_dir(output_dir: str, options: TrainOptions) -> list[str]:
    """Refuse to mix a new run with an earlier one in `output_dir`: its stale checkpoints would be what a later
    --resume continues. Returns what --overwrite deletes."""
    previous = previous_run_outputs(output_dir)
    if previous and not (options.resume or options.overwrite):
        raise FileExistsError(f"--output {output_dir} holds an earlier run ({', '.join(previous)}): pass --resume to "
                              "continue it from its last checkpoint, or --overwrite to delete it and start again")
    return previous if options.overwrite else []


def delete_run_outputs(output_dir: str, names: list[str], args) -> None:
    """Delete an earlier run's outputs on the main process while the others wait."""
    with args.main_process_first(desc="deleting the earlier run", local=False):
        if args.process_index == 0:
            for name in names:
                path = os.path.join(output_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            logger.info("--overwrite: deleted the earlier run's %s from %s", ", ".join(names), output_dir)


def run_stage(stage: Stage, model_dir, dataset_dir, output_dir, options: TrainOptions) -> dict:
    """Train one stage and export its result; returns losses, steps, seconds and output paths."""
    started = time.time()
    quantization = quantization_config(options)
    model_dir, dataset_dir, output_dir = (os.path.abspath(os.fspath(p)) for p in (model_dir, dataset_dir, output_dir))
    earlier_run = check_output_dir(output_dir, options)
    records, image_roots = load_split(dataset_dir, stage.subset, options.split)
    records = stage.select(records, options)
    if len(records) == 0:
        raise ValueError(f"{dataset_dir}/{stage.subset}[{options.split}] has no records for stage {stage.name}")
    args = training_arguments(options, output_dir)
    if earlier_run:
        delete_run_outputs(output_dir, earlier_run, args)
    model, processor = load_training_model(model_dir, quantization)
    model.freeze_vision_tower()
    model.multi_modal_projector.float()  # trained in both stages: float32 whatever dtype the dir is stored in
    radiometry, band_names = dataset_radiometry(dataset_dir), dataset_band_names(dataset_dir)
    feature_cache = cache_tower_features(records, image_roots, model, processor, options, args, radiometry,
                                         band_names)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    set_seed(options.seed)  # the stage's new weights (LoRA) are drawn from --seed, not from what ran before
    model = stage.prepare(model, options)
    hyperparameters = run_hyperparameters(stage, model, model_dir, dataset_dir, len(records), options, args)
    trainer = SpectralLlavaTrainer(
        model=model,
        args=args,
        train_dataset=records,
        data_collator=SpectralLlavaCollator(processor, image_roots, feature_cache, radiometry, band_names),
        callbacks=[LossLogger(output_dir, hyperparameters)],
    )
    resume = checkpoint_to_resume(output_dir, options.resume)
    result = trainer.train(resume_from_checkpoint=resume)
    export_model = exportable_model(trainer, stage, model_dir, options, quantized=quantization is not None)
    summary = {}
    if trainer.is_world_process_zero():
        atomic_write_json(Path(output_dir) / HYPERPARAMETERS, hyperparameters)
        provenance = stage_provenance(stage, model_dir, dataset_dir, options, records, trainer.state, args.world_size)
        outputs = stage.export(export_model, processor, output_dir, options, provenance)
        summary = write_summary(stage, trainer, result, output_dir, options, outputs,
                                {"records": len(records), "seconds": round(time.time() - started, 2),
                                 "resumed_from": resume})
    trainer.accelerator.wait_for_everyone()
    return summary


def write_summary(stage: Stage, trainer, result, output_dir: str, options: TrainOptions, outputs: dict,
                  extra: dict) -> dict:
    """The loss curve and OUTPUT/train_summary.json (what `run_stage` returns)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    log_dir = Path(output_dir) / "logs"
    plot_loss_curve(trainer.state.log_history, log_dir / "loss_curve.png", f"Spectral-LLaVA {stage.name}")
    summary = {
        "stage": stage.name,
        "first_loss": losses[0] if losses else math.nan,
        "final_loss": losses[-1] if losses else math.nan,
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        **extra,
        "train_seconds": result.metrics.get("train_runtime"),
        "outputs": {
            **outputs,
            "loss_csv": str(log_dir / "loss.csv"),
            "tensorboard": str(log_dir / "tensorboard"),
            "loss_curve": str(log_dir / "loss_curve.png"),
            "hyperparameters": str(Path(output_dir) / HYPERPARAMETERS),
            **({"feature_cache": os.path.abspath(options.cache_features)} if options.cache_features else {}),
        },
    }
    atomic_write_json(Path(output_dir) / "train_summary.json", summary)
    logger.info("%s done: loss %.4f -> %.4f in %d steps; outputs in %s", stage.name, summary["first_loss"],
                summary["final_loss"], summary["steps"], output_dir)
    return summary


def exportable_model(trainer, stage: Stage, model_dir: str, options: TrainOptions, quantized: bool = False):
    """The trained model with whole (unsharded, unquantized) weights on the main process; None elsewhere.

    FSDP and DeepSpeed ZeRO-3 shard the parameters: their full state dict is gathered (a collective call on every
    process). With 8/4-bit LLM weights the trained weights are taken as they are. Either way the trainable weights
    are loaded into a fresh copy of the starting model, in its stored dtype, on the main process.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    sharded = trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()
    if not (sharded or quantized):
        return trainer.accelerator.unwrap_model(trainer.model) if trainer.is_world_process_zero() else None
    if sharded:
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled
                                                        else trainer.model)
    else:
        state_dict = trainable_state_dict(trainer.accelerator.unwrap_model(trainer.model))
    if not trainer.is_world_process_zero():
        return None
    fresh, _ = load_model_and_processor(model_dir, device=None, dtype="auto")
    fresh.freeze_vision_tower()
    fresh.multi_modal_projector.float()
    fresh = stage.prepare(fresh, options)
    trainable = trainable_state_dict(fresh)
    fresh.load_state_dict({name: state_dict[name].float().cpu() for name in trainable}, strict=False)
    return fresh


def stage_provenance(stage: Stage, model_dir: str, dataset_dir: str, options: TrainOptions, records, state,
                     world_size: int) -> dict:
    """The provenance of the starting model with this stage appended (see `modeling_spectral_llava.model_card`):
    the data it saw (records, patches per source, captioner) and the hyper-parameters it ran with."""
    provenance = read_provenance(model_dir)
    build_info = load_build_info(dataset_dir)
    images = dict(zip(records["patch_id"], records["image"]))  # image paths start with their source
    patches = collections.Counter(image.split("/", 1)[0] for image in images.values())
    common = {field.name for field in dataclasses.fields(TrainOptions)}
    entry = {
        "stage": stage.name, "base_model": model_dir, "dataset": dataset_dir,
        "dataset_hub_id": build_info.get("hub_repo_id"), "captioner": build_info.get("captioner"),
        "sources": sorted(patches), "patches": dict(sorted(patches.items())), "split": options.split,
        "records": len(records), "steps": state.global_step, "epochs": round(state.epoch, 2),
        "batch_size": options.batch_size, "grad_accum": options.grad_accum, "world_size": world_size,
        "effective_batch_size": options.batch_size * options.grad_accum * world_size,
        "optimizer": "Adam (torch AdamW, weight_decay=0)", "lr": options.lr, "lr_scheduler": "cosine",
        "warmup_ratio": options.warmup_ratio, "seed": options.seed,
        "stage_options": {name: value for name, value in dataclasses.asdict(options).items() if name not in common},
    }
    return {**provenance, "training": [*provenance.get("training", []), entry]}


def main(stage: Stage, argv=None) -> int:
    """`python -m train.<stage>` / `accelerate launch -m train.<stage>`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = prefer_hyphens(HfArgumentParser((StagePaths, stage.options), prog=f"spectral_llava.train.{stage.name}",
                                             description=stage.options.__doc__))
    try:
        paths, options = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ValueError as error:  # a value the options dataclass refuses, e.g. --batch-size 0
        parser.error(str(error))
    try:
        summary = run_stage(stage, paths.model, paths.dataset, paths.output, options)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # bad input: the message names file or flag
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if summary:
        print(json.dumps(summary, indent=1))
    return 0
