"""The linear probe of the frozen-encoder benchmark: a linear layer on frozen, standardised features, trained on
the train split, its learning rate and weight decay selected on the validation split, then retrained with several
seeds and scored on the test split (top-1 accuracy, or micro / macro mAP for multi-label tasks)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from spectral_llava.inference.runtime import single_thread
from .scores import average_precision, top1_accuracy


@dataclass(frozen=True)
class ProbeConfig:
    lr: float
    weight_decay: float


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Features z-scored with the train split's per-dimension mean and std (MAE's BatchNorm without affine before
    its linear probe, computed once); constant dimensions are only centred."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def train_probes(features, targets, configs, num_classes: int, multilabel: bool, epochs: int, batch_size: int,
                 seed: int) -> list:
    """One `torch.nn.Linear` per config (weights (D, C), bias (C,)), all trained side by side with AdamW on the
    same seeded initialisation and batch order (cross-entropy, or BCE with logits for multi-label targets): the
    loss is the sum of the per-config mean losses and each config has its own parameter groups, so every probe
    follows exactly the updates it would get alone."""
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.float32 if multilabel else torch.long)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], num_classes)
    weights = [torch.nn.Parameter(layer.weight.detach().T.clone()) for _ in configs]
    biases = [torch.nn.Parameter(layer.bias.detach().clone()) for _ in configs]
    groups = [group for c, w, b in zip(configs, weights, biases)
              for group in ({"params": [w], "lr": c.lr, "weight_decay": c.weight_decay},
                            {"params": [b], "lr": c.lr, "weight_decay": 0.0})]
    optimizer = torch.optim.AdamW(groups)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits if multilabel else torch.nn.functional.cross_entropy
    generator = torch.Generator().manual_seed(seed)
    with single_thread():
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=generator).split(batch_size):
                logits = torch.einsum("bd,kdc->kbc", x[batch], torch.stack(weights)) + torch.stack(biases)[:, None]
                loss = sum(loss_fn(logits[k], y[batch]) for k in range(len(configs)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return [(w.detach().numpy(), b.detach().numpy()) for w, b in zip(weights, biases)]


def score(probe, features, targets, multilabel: bool, class_names) -> dict:
    """Test metrics of one probe: {"accuracy"} or {"micro_map", "macro_map", "per_class_ap", ...}."""
    weight, bias = probe
    logits = features @ weight + bias
    if multilabel:
        return average_precision(targets, logits, class_names)
    return {"accuracy": top1_accuracy(targets, logits)}


def selection_score(metrics: dict, multilabel: bool) -> float:
    value = metrics["micro_map"] if multilabel else metrics["accuracy"]
    return -math.inf if math.isnan(value) else value


def fit_and_test(splits: dict, class_names, multilabel: bool, learning_rates, weight_decays, epochs: int,
                 batch_size: int, seeds: int, seed: int) -> dict:
    """Select (lr, weight decay) on validation, retrain `seeds` times (seeds `seed`..), score on test.

    `splits`: {"train" | "validation" | "test": (features (N, D), targets)}. Without validation samples the middle
    value of each grid is used (and said so under "notes")."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (splits[name] for name in ("train", "validation", "test"))
    if not len(x_train) or not len(x_test):
        raise ValueError(f"the linear probe needs train and test samples, got {len(x_train)} and {len(x_test)}")
    x_train, x_val, x_test = standardise(x_train, x_val, x_test)
    configs = [ProbeConfig(lr, wd) for lr, wd in itertools.product(learning_rates, weight_decays)]
    result = {"notes": [], "selection": []}
    if len(x_val):
        probes = train_probes(x_train, y_train, configs, len(class_names), multilabel, epochs, batch_size, seed)
        for config, probe in zip(configs, probes):
            value = selection_score(score(probe, x_val, y_val, multilabel, class_names), multilabel)
            result["selection"].append({"lr": config.lr, "weight_decay": config.weight_decay,
                                        "validation_score": value})
        best = configs[int(np.argmax([entry["validation_score"] for entry in result["selection"]]))]
    else:
        best = ProbeConfig(sorted(learning_rates)[len(learning_rates) // 2],
                           sorted(weight_decays)[len(weight_decays) // 2])
        result["notes"].append(f"no validation samples: hyper-parameters not selected, used the middle of each grid "
                               f"(lr {best.lr:g}, weight decay {best.weight_decay:g})")
    result["selected"] = {"lr": best.lr, "weight_decay": best.weight_decay}
    runs = []
    for k in range(seeds):
        probe = train_probes(x_train, y_train, [best], len(class_names), multilabel, epochs, batch_size, seed + k)[0]
        runs.append(score(probe, x_test, y_test, multilabel, class_names))
    keys = ("micro_map", "macro_map") if multilabel else ("accuracy",)
    for key in keys:
        values = [run[key] for run in runs]
        result[key] = float(np.mean(values))
        result[f"{key}_std"] = float(np.std(values))
    if multilabel:
        result["per_class_ap"] = {name: float(np.mean([run["per_class_ap"][name] for run in runs]))
                                  for name in runs[0]["per_class_ap"]}
        result["classes_without_positives"] = runs[0]["classes_without_positives"]
    result["per_seed"] = [{key: run[key] for key in keys} for run in runs]
    return result
