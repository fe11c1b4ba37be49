"""The training loop shared by stage 1 (`train.align`) and stage 2 (`train.finetune`).

One `transformers.Trainer` setup; a `Stage` supplies what differs: which records, which parameters train, and what
is exported at the end. Runs under `accelerate launch` (CPU, one or many GPUs, FSDP, DeepSpeed) or in-process.

Outputs in OUTPUT_DIR: `checkpoint-N/` (trainable weights only, optimizer, scheduler, RNG, trainer state, and
`hyperparameters.json`), `hyperparameters.json`, `logs/loss.csv`, `logs/tensorboard/`, `logs/loss_curve.png`,
`train_summary.json`, plus the stage's exported model(s).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from train.data import FeatureCache, SpectralLlavaCollator, feature_fingerprint, load_split, processor_for_dataset
from train.spectral_inst import atomic_write_json, resolve_image_path

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS = "trainable.safetensors"
HYPERPARAMETERS = "hyperparameters.json"


@dataclass
class TrainOptions:
    """Options common to both stages; `None` means the stage's default (see `Stage.defaults`)."""

    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    save_steps: int = 500
    seed: int = 0
    resume: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    cache_features: str | None = None
    split: str = "train"
    warmup_ratio: float = 0.03
    logging_steps: int = 1


@dataclass
class Stage:
    """What one training stage changes in the shared loop."""

    name: str
    subset: str  # build-dataset output folder: "alignment" or "instructions"
    defaults: dict  # per-stage defaults of TrainOptions fields (paper recipe)
    select: Callable  # (dataset, options) -> dataset of the records to train on
    prepare: Callable  # (model, options) -> model with only the stage's parameters trainable
    export: Callable  # (model, processor, output_dir, options, base_model_dir) -> {name: path}


def resolve_options(stage: Stage, options: TrainOptions) -> TrainOptions:
    """Fill every `None` field with the stage default."""
    filled = {key: stage.defaults[key] for key, value in dataclasses.asdict(options).items()
              if value is None and key in stage.defaults}
    return dataclasses.replace(options, **filled)


def add_common_arguments(parser: argparse.ArgumentParser, stage_defaults: dict) -> None:
    def default(name):
        return f" (default {stage_defaults[name]})" if name in stage_defaults else ""

    parser.add_argument("--model", required=True, metavar="DIR", help="Spectral-LLaVA model dir to start from")
    parser.add_argument("--dataset", required=True, metavar="DIR", help="a `spectral-llava build-dataset` output")
    parser.add_argument("--output", required=True, metavar="DIR", help="checkpoints, logs and exported model(s)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    parser.add_argument("--epochs", type=float, help="passes over the training records" + default("epochs"))
    parser.add_argument("--batch-size", type=int, help="records per device and micro-step" + default("batch_size"))
    parser.add_argument("--grad-accum", type=int, help="micro-steps per optimizer step" + default("grad_accum"))
    parser.add_argument("--lr", type=float, help="peak learning rate (Adam, cosine decay)" + default("lr"))
    parser.add_argument("--save-steps", type=int, default=500, help="checkpoint every N optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute LLM activations")
    parser.add_argument("--cache-features", metavar="DIR",
                        help="encode every image once with the frozen tower into DIR and train from it")
    parser.add_argument("--split", default="train", help="dataset split to train on (default train)")
    parser.add_argument("--warmup-ratio", type=float, default=0.03, help="linear warm-up fraction of the steps")


def options_from_args(args: argparse.Namespace, extra: type[TrainOptions]) -> TrainOptions:
    names = {field.name for field in dataclasses.fields(extra)}
    return extra(**{name: getattr(args, name) for name in names if hasattr(args, name)})


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
        tmp = os.path.join(output_dir, f".{TRAINABLE_WEIGHTS}.tmp")
        save_file(trainable, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(output_dir, TRAINABLE_WEIGHTS))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

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
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)


def load_model_and_processor(model_dir):
    from transformers import AutoProcessor

    from modeling_spectral_llava.modeling_spectral_llava import SpectralLlavaForConditionalGeneration

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir}/config.json is missing: --model must be a Spectral-LLaVA model dir")
    model = SpectralLlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    return model, processor


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
        gradient_checkpointing=options.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        report_to="none",
        # without a GPU, `accelerate launch --multi_gpu --num_processes N` (torchrun) gives N gloo CPU processes
        use_cpu=torch.accelerator.current_accelerator() is None,
    )


def run_stage(stage: Stage, model_dir, dataset_dir, output_dir, options: TrainOptions) -> dict:
    """Train one stage and export its result; returns losses, steps, seconds and output paths."""
    started = time.time()
    options = resolve_options(stage, options)
    model_dir, dataset_dir, output_dir = (os.path.abspath(os.fspath(p)) for p in (model_dir, dataset_dir, output_dir))
    records, image_roots = load_split(dataset_dir, stage.subset, options.split)
    records = stage.select(records, options)
    if len(records) == 0:
        raise ValueError(f"{dataset_dir}/{stage.subset}[{options.split}] has no records for stage {stage.name}")
    args = training_arguments(options, output_dir)
    model, processor = load_model_and_processor(model_dir)
    model.freeze_vision_tower()
    data_processor = processor_for_dataset(processor, dataset_dir)

    feature_cache = None
    if options.cache_features:
        images = {}
        for record in records:
            images.setdefault(record["patch_id"], resolve_image_path(record["image"], image_roots))
        fingerprint = feature_fingerprint(model, data_processor.image_processor)
        with args.main_process_first(desc="feature cache", local=False):
            model.model.vision_tower.to(args.device)
            feature_cache = FeatureCache(options.cache_features, fingerprint).build(
                model, data_processor.image_processor, images, batch_size=options.batch_size
            )

    model = stage.prepare(model, options)
    hyperparameters = {
        "stage": stage.name, "model": model_dir, "dataset": dataset_dir, "records": len(records),
        **dataclasses.asdict(options), "world_size": args.world_size,
        "effective_batch_size": options.batch_size * options.grad_accum * args.world_size,
        "optimizer": "Adam (torch AdamW, weight_decay=0)", "lr_scheduler": "cosine",
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }
    trainer = SpectralLlavaTrainer(
        model=model,
        args=args,
        train_dataset=records,
        data_collator=SpectralLlavaCollator(data_processor, image_roots, feature_cache),
        callbacks=[LossLogger(output_dir, hyperparameters)],
    )
    resume = None
    if options.resume:
        resume = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if resume is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", output_dir)
    result = trainer.train(resume_from_checkpoint=resume)

    export_model = exportable_model(trainer, stage, model_dir, options)
    summary = {}
    if trainer.is_world_process_zero():
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        log_dir = Path(output_dir) / "logs"
        plot_loss_curve(trainer.state.log_history, log_dir / "loss_curve.png", f"Spectral-LLaVA {stage.name}")
        atomic_write_json(Path(output_dir) / HYPERPARAMETERS, hyperparameters)
        outputs = stage.export(export_model, processor, output_dir, options, model_dir)
        summary = {
            "stage": stage.name,
            "first_loss": losses[0] if losses else math.nan,
            "final_loss": losses[-1] if losses else math.nan,
            "train_loss": result.training_loss,
            "steps": trainer.state.global_step,
            "records": len(records),
            "seconds": round(time.time() - started, 2),
            "train_seconds": result.metrics.get("train_runtime"),
            "resumed_from": resume,
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
    trainer.accelerator.wait_for_everyone()
    return summary


def exportable_model(trainer, stage: Stage, model_dir: str, options: TrainOptions):
    """The trained model with whole (unsharded) weights on the main process; None elsewhere.

    FSDP and DeepSpeed ZeRO-3 shard the parameters: their full state dict is gathered (a collective call on every
    process) and its trainable weights are loaded into a fresh copy of the starting model on the main process.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not (trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()):
        return trainer.accelerator.unwrap_model(trainer.model) if trainer.is_world_process_zero() else None
    state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    if not trainer.is_world_process_zero():
        return None
    fresh, _ = load_model_and_processor(model_dir)
    fresh.freeze_vision_tower()
    fresh = stage.prepare(fresh, options)
    trainable = trainable_state_dict(fresh)
    fresh.load_state_dict({name: state_dict[name].float().cpu() for name in trainable}, strict=False)
    return fresh


def card_fields(model, base_model_dir: str) -> dict:
    llm = getattr(model.config.text_config, "_name_or_path", "") or "a LLaMA-family LLM"
    return {"vision_source": f"SpectralGPT, frozen (tower of {os.path.basename(base_model_dir)})", "llm_source": llm}


def main(stage: Stage, add_stage_arguments: Callable, options_class: type[TrainOptions], argv=None) -> int:
    """`python -m train.<stage>` / `accelerate launch -m train.<stage>`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog=f"train.{stage.name}", description=stage.__doc__)
    add_common_arguments(parser, stage.defaults)
    add_stage_arguments(parser)
    args = parser.parse_args(argv)
    summary = run_stage(stage, args.model, args.dataset, args.output, options_from_args(args, options_class))
    if summary:
        print(json.dumps(summary, indent=1))
    return 0
