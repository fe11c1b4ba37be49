"""Linear probe (paper Fig. 4): EuroSAT features of two kinds, ``vision`` (tower output mean-pooled) and ``grounded``
(projector output mean-pooled), both from ONE tower pass per image. A ``torch.nn.Linear`` is trained with Adam
(lr 1e-4, batch 100, 100 epochs) at train ratios 0.1..0.9, five stratified seeded folds each.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from spectral_llava.inference.runtime import single_thread
from spectral_llava.utils.fileio import atomic_write_json

from .data import eurosat_features
from .options import FeatureOptions, ProbeOptions, split_options
from .plots import FEATURE_TITLES, plot_linear_probe

logger = logging.getLogger(__name__)


def fold_splits(labels: np.ndarray, ratio: float, n_splits: int = 5, seed: int = 0):
    """The train/test index pairs of one train ratio, and the name of the splitter used.

    Default, "rotated stratified folds": each class's samples are shuffled once (seeded); for fold k the
    class's sample list is rotated by k/n_splits of its length and the first round(ratio * n_c) samples train,
    the rest test. At ratio 0.8 with 5 folds this is exactly stratified 5-fold cross-validation; at other
    ratios the test windows move by one fold per split. When some class would get no training sample,
    sklearn's StratifiedShuffleSplit(n_splits, train_size=ratio) is used instead (it allocates the training
    quota across classes by largest remainders, so the small classes may still miss out).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    train_counts = {c: int(round(ratio * n)) for c, n in zip(classes, counts)}
    if min(train_counts.values()) >= 1 and sum(n - train_counts[c] for c, n in zip(classes, counts)) >= 1:
        rng = np.random.default_rng(seed)
        order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
        splits = []
        for fold in range(n_splits):
            train, test = [], []
            for c in classes:
                members = order[c]
                rotated = np.roll(members, -int(round(fold * len(members) / n_splits)))
                train.append(rotated[:train_counts[c]])
                test.append(rotated[train_counts[c]:])
            splits.append((np.sort(np.concatenate(train)), np.sort(np.concatenate(test))))
        return splits, "rotated stratified folds"
    from sklearn.model_selection import StratifiedShuffleSplit

    splitter = StratifiedShuffleSplit(n_splits=n_splits, train_size=ratio, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels)), f"StratifiedShuffleSplit(n_splits={n_splits})"


def train_linear_probes(features, labels, splits, num_classes: int, epochs: int = 100, batch_size: int = 100,
                        lr: float = 1e-4, seed: int = 0) -> list[float]:
    """Test accuracy of one torch.nn.Linear per (train, test) split, trained with Adam on cross-entropy.

    All splits have the same sizes, so their probes train side by side as one batched matrix product: the
    loss is the sum of the per-split mean losses and Adam is elementwise, so every probe follows exactly the
    updates it would get alone (fold k: init seed `seed + k`, its own shuffling of its training set).
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    train = torch.as_tensor(np.stack([split[0] for split in splits]))  # (F, n_train)
    test = torch.as_tensor(np.stack([split[1] for split in splits]))  # (F, n_test)
    folds = torch.arange(len(splits))[:, None]
    weights, biases = [], []
    for fold in range(len(splits)):
        torch.manual_seed(seed + fold)
        layer = torch.nn.Linear(x.shape[1], num_classes)
        weights.append(layer.weight.detach().T)
        biases.append(layer.bias.detach())
    weight = torch.nn.Parameter(torch.stack(weights))  # (F, D, C)
    bias = torch.nn.Parameter(torch.stack(biases)[:, None, :])  # (F, 1, C)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    generators = [torch.Generator().manual_seed(seed + fold) for fold in range(len(splits))]
    with single_thread():
        for _ in range(epochs):
            order = torch.stack([torch.randperm(train.shape[1], generator=g) for g in generators])
            for batch in order.split(batch_size, dim=1):
                chosen = train[folds, batch]  # (F, b) sample indices
                logits = torch.baddbmm(bias, x[chosen], weight)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[chosen].flatten(), reduction="none")
                optimizer.zero_grad()
                loss.view(len(splits), -1).mean(1).sum().backward()
                optimizer.step()
        with torch.no_grad():
            predicted = torch.baddbmm(bias, x[test], weight).argmax(-1)
    return (predicted == y[test]).float().mean(1).tolist()


def linear_probe(features: dict, labels, class_names: Sequence[str], **options) -> dict:
    """Accuracy mean/std over the folds, per train ratio and feature kind (the same folds for every kind)."""
    options = ProbeOptions(**options)
    ratios, n_splits, epochs, batch_size, lr, seed = (options.ratios, options.folds, options.epochs,
                                                      options.batch_size, options.lr, options.seed)
    labels = np.asarray(labels)
    result = {
        "protocol": {"classifier": "torch.nn.Linear", "optimizer": "Adam", "lr": lr, "batch_size": batch_size,
                     "epochs": epochs, "folds": n_splits, "seed": seed, "loss": "cross-entropy",
                     "features": {kind: FEATURE_TITLES[kind] for kind in features}},
        "num_samples": int(len(labels)), "class_names": list(class_names),
        "class_counts": {name: int((labels == i).sum()) for i, name in enumerate(class_names)},
        "ratios": [], "splitter": {}, "notes": [],
        "results": {kind: {} for kind in features},
    }
    for ratio in tqdm(ratios, desc="linear probe", unit="ratio"):
        key = f"{ratio:g}"
        try:
            splits, splitter = fold_splits(labels, ratio, n_splits, seed)
        except ValueError as error:  # fewer training samples than classes: nothing to fit
            result["notes"].append(f"ratio {key} skipped: {error}")
            continue
        result["ratios"].append(ratio)
        result["splitter"][key] = splitter
        if splitter.startswith("StratifiedShuffleSplit"):
            result["notes"].append(
                f"ratio {key}: some class would have < 1 training sample with per-class rounding; "
                f"used {splitter} (train_size={ratio})")
        for kind, values in features.items():
            accuracies = train_linear_probes(values, labels, splits, len(class_names), epochs, batch_size, lr, seed)
            result["results"][kind][key] = {
                "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "folds": accuracies,
                "train_size": int(len(splits[0][0])), "test_size": int(len(splits[0][1])),
            }
    return result


def run_linear_probe(model_dir, eurosat_root, output_dir, model=None, processor=None, radiometry=None,
                     **options) -> dict:
    """Write OUTPUT/linear_probe.json and OUTPUT/linear_probe.png; returns the result dict.

    `options`: the fields of `ProbeOptions` and `evaluation.data.FeatureOptions`; pass `model`/`processor` to
    reuse loaded ones; `radiometry` (a `RadiometrySettings`) is how the images are read.
    """
    probe, feature_options = split_options(options, ProbeOptions, FeatureOptions)
    output_dir = Path(output_dir)
    features, labels, class_names, _ = eurosat_features(model_dir, eurosat_root, output_dir, feature_options,
                                                        model, processor, radiometry)
    result = linear_probe(features, labels, class_names, **vars(probe))
    result.update({"model": str(model_dir), "eurosat": str(eurosat_root)})
    atomic_write_json(output_dir / "linear_probe.json", result)
    plot_linear_probe(result, output_dir / "linear_probe.png")
    logger.info("linear probe: %s and %s", output_dir / "linear_probe.json", output_dir / "linear_probe.png")
    return result
