"""Evaluation of Spectral-LLaVA checkpoints (paper section V).

* Linear probe (Fig. 4): EuroSAT features of two kinds, both from ONE tower pass per image:
  ``vision`` = the SpectralGPT tower output mean-pooled over its tokens (vision-only) and ``grounded`` = the
  projector output mean-pooled over the visual tokens (language-grounded). A ``torch.nn.Linear`` is trained
  with Adam (lr 1e-4, batch 100, 100 epochs) at train ratios 10 %..90 %, five stratified seeded folds each.
* t-SNE (Fig. 3) of both feature kinds, coloured by class, side by side.
* Classification from generated text: the ``[classification]`` task prompt, answers read back with
  :func:`train.spectral_inst.parse_labels`; EuroSAT accuracy + confusion matrix, BigEarthNet-19 micro/macro F1.
* Description quality: label consistency (which classes a description mentions, see :data:`CLASS_PHRASES`)
  and a LLaVA-Bench-style judged score relative to a reference answer, with a pluggable judge LLM.

Tower features are cached on disk (``cache_dir``: pooled rows, a few KB per image), keyed by a fingerprint of the
tower weights, the visual-token layout and the image processor, so probing several projectors of one tower
(stage 1 vs stage 2, class-label vs scene-description alignment) costs one tower pass; ``tower_cache`` instead
reads and extends a training feature cache (``--cache-features`` of align/finetune), which generation can use too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from processing.processing_spectral_llava import TASK_PROMPTS

from .spectral_inst import (BEN19_LABELS, EUROSAT_CLASSES, EUROSAT_PHRASES, atomic_write_bytes,
                            atomic_write_json, parse_labels, resolve_image_path)

logger = logging.getLogger(__name__)

TRAIN_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FEATURE_TITLES = {"vision": "vision-only (SpectralGPT tower, mean-pooled)",
                  "grounded": "language-grounded (projector output, mean-pooled)"}
NO_LABEL = "(none)"


# ----------------------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------------------


def load_model(model_dir: str | os.PathLike, device: str | None = None):
    """(SpectralLlavaForConditionalGeneration in eval mode, SpectralLlavaProcessor) of a saved model dir, on
    `device` (default: CUDA when available, else CPU)."""
    from modeling_spectral_llava.modeling_spectral_llava import SpectralLlavaForConditionalGeneration
    from processing.processing_spectral_llava import SpectralLlavaProcessor

    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a Spectral-LLaVA model dir (no config.json)")
    model = SpectralLlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # the saved processor config names the image processor by its remote-code class: allow that code, which
    # is this repository's own processing module
    processor = SpectralLlavaProcessor.from_pretrained(model_dir, trust_remote_code=True)
    return model, processor


def list_eurosat(root: str | os.PathLike, max_per_class: int | None = None):
    """(paths, labels, class_names) of EuroSAT class folders ``ROOT/<Class>/*.tif``; classes sorted by name.

    ``max_per_class`` keeps the first N files (sorted by name) of each class.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--eurosat: no such folder: {root}")
    class_names, paths, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            continue
        class_names.append(folder.name)
        for path in files[:max_per_class]:
            paths.append(str(path))
            labels.append(len(class_names) - 1)
    if len(class_names) < 2:
        raise FileNotFoundError(f"--eurosat {root}: expected at least two <Class>/<file>.tif folders")
    return paths, np.asarray(labels), class_names


def load_patches(dataset_dir: str | os.PathLike, split: str | None = "test", max_samples: int | None = None):
    """Rows of a Spectral-Inst ``patches`` split with an absolute ``path`` added; `split` may name several
    splits separated by commas ("validation,test"), None means all."""
    from datasets import load_from_disk

    dataset_dir = Path(dataset_dir)
    info_path = dataset_dir / "build_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"--dataset {dataset_dir}: no build_info.json (build it with build-dataset)")
    roots = json.loads(info_path.read_text())["image_roots"]
    patches = load_from_disk(str(dataset_dir / "patches"))
    splits = list(patches) if split is None else [name.strip() for name in split.split(",")]
    for name in splits:
        if name not in patches:
            raise ValueError(f"--split {name!r}: {dataset_dir}/patches has splits {sorted(patches)}")
    rows = [dict(row, path=resolve_image_path(row["image_path"], roots)) for name in splits for row in patches[name]]
    return rows[:max_samples]


# ----------------------------------------------------------------------------------------------------------
# Features: one tower pass, cached
# ----------------------------------------------------------------------------------------------------------


@contextmanager
def single_thread():
    """Run torch on one thread: the probe's and the decoding steps' matrices are small, so extra threads only add
    synchronisation; on a shared 2-core machine they made both 10x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _projector_is_linear(model) -> bool:
    return model.config.projector_type == "linear"


def image_id(path: str) -> str:
    """The key of an image in a training FeatureCache: the Spectral-Inst patch id, i.e. the file stem of a
    EuroSAT GeoTIFF and the folder name of a BigEarthNet patch folder."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def _file_key(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def _load_pooled_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {str(key): (data["vision"][i], data["tokens"][i]) for i, key in enumerate(data["keys"])}


def _save_pooled_cache(path: Path, entries: dict) -> None:
    import io

    keys = sorted(entries)
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.asarray(keys), vision=np.stack([entries[k][0] for k in keys]),
             tokens=np.stack([entries[k][1] for k in keys]))
    atomic_write_bytes(path, buffer.getvalue())


def open_tower_cache(tower_cache, model, image_processor, paths: Sequence[str], batch_size: int = 8,
                     fingerprint: str | None = None):
    """A training `train.data.FeatureCache` at `tower_cache` holding the raw tower output of every path
    (encoding only the images it lacks), or None when `tower_cache` is None or there are no paths."""
    if tower_cache is None or not paths:
        return None
    from .data import FeatureCache, feature_fingerprint

    images = {}
    for path in paths:
        key = image_id(path)
        if images.setdefault(key, os.path.abspath(path)) != os.path.abspath(path):
            raise ValueError(f"--tower-cache: two images share the id {key!r}: {images[key]} and {path}")
    cache = FeatureCache(tower_cache, fingerprint or feature_fingerprint(model, image_processor))
    return cache.build(model, image_processor, images, batch_size=batch_size)


def tower_features(model, image_processor, paths: Sequence[str], cache_dir=None, tower_cache=None,
                   batch_size: int = 8, desc: str = "tower features"):
    """(vision (N, D), tokens (N, K, D')) for `paths`, from one tower pass per image.

    `vision` is the tower output mean-pooled over its T*h*w tokens; `tokens` are the visual tokens the
    projector consumes (arranged by the model's layout and spatial pool). With a linear projector K = 1 holds
    the token mean (exact, since a mean and a linear map commute), otherwise K = N_vis.

    `cache_dir` keeps these pooled rows in ``cache_dir/tower-<fingerprint>.npz`` (a few KB per image; the
    fingerprint covers the tower weights, layout and image processor), so later runs on the same tower skip
    the tower. `tower_cache` is a training feature cache (`--cache-features` of align/finetune; raw tower
    output keyed by patch id) to read from and extend instead of running the tower directly.
    """
    from .data import feature_fingerprint

    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"image not found: {path}")
    config = model.config
    token_mean = _projector_is_linear(model)
    pooled, pooled_path = {}, None
    fingerprint = feature_fingerprint(model, image_processor) if cache_dir or tower_cache else None
    if cache_dir is not None:
        settings = json.dumps([fingerprint, config.visual_token_layout,
                               config.spatial_pool, token_mean])
        pooled_path = Path(cache_dir) / f"tower-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.npz"
        pooled = _load_pooled_cache(pooled_path)
    keys = [_file_key(p) for p in paths]
    missing = [i for i, key in enumerate(keys) if key not in pooled]
    if pooled_path is not None:
        logger.info("tower features: %d of %d images cached in %s", len(paths) - len(missing), len(paths),
                    pooled_path)
    raw_cache = open_tower_cache(tower_cache, model, image_processor, [paths[i] for i in missing], batch_size,
                                 fingerprint)
    with torch.inference_mode(), tqdm(total=len(missing), desc=desc, unit="img", disable=not missing) as bar:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            if raw_cache is not None:
                raw = raw_cache.get([image_id(paths[i]) for i in chunk]).to(model.device, model.dtype)
            else:
                pixels = image_processor([paths[i] for i in chunk], return_tensors="pt")["pixel_values"]
                raw = model.model.select_vision_features(pixels.to(model.device, model.dtype))
            tokens = model.model.arrange_visual_tokens(raw)
            if token_mean:
                tokens = tokens.mean(dim=1, keepdim=True)
            for row, i in enumerate(chunk):
                pooled[keys[i]] = (raw[row].mean(0).float().cpu().numpy(), tokens[row].float().cpu().numpy())
            bar.update(len(chunk))
    if pooled_path is not None and missing:
        _save_pooled_cache(pooled_path, pooled)
        logger.info("tower feature cache: %s (%d images)", pooled_path, len(pooled))
    return np.stack([pooled[k][0] for k in keys]), np.stack([pooled[k][1] for k in keys])


def probe_features(model, image_processor, paths: Sequence[str], cache_dir=None, tower_cache=None,
                   batch_size: int = 8) -> dict:
    """{"vision": (N, D), "grounded": (N, d_llm)} float32 arrays, both from the same tower pass."""
    vision, tokens = tower_features(model, image_processor, paths, cache_dir, tower_cache, batch_size)
    projector = model.model.multi_modal_projector
    with torch.inference_mode():
        weight = projector.linear_1.weight
        grounded = projector(torch.from_numpy(tokens).to(weight.device, weight.dtype)).mean(dim=1)
    return {"vision": vision.astype(np.float32), "grounded": grounded.float().cpu().numpy()}


# ----------------------------------------------------------------------------------------------------------
# Linear probe (Fig. 4)
# ----------------------------------------------------------------------------------------------------------


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


def linear_probe(features: dict, labels, class_names: Sequence[str], ratios=TRAIN_RATIOS, n_splits: int = 5,
                 epochs: int = 100, batch_size: int = 100, lr: float = 1e-4, seed: int = 0) -> dict:
    """Accuracy mean/std over the folds, per train ratio and feature kind (the same folds for every kind)."""
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


def plot_linear_probe(result: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Fig. 4: test accuracy (mean +/- std over folds) against the train ratio, one line per feature kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, by_ratio in result["results"].items():
        keys = sorted(by_ratio, key=float)
        x = [100 * float(k) for k in keys]
        mean = np.array([100 * by_ratio[k]["mean"] for k in keys])
        std = np.array([100 * by_ratio[k]["std"] for k in keys])
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=FEATURE_TITLES.get(kind, kind))
    ax.set_xlabel("train split (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"Linear probe, EuroSAT ({result['num_samples']} images, {result['protocol']['folds']} folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def _save_figure(fig, path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _eurosat_features(model_dir, eurosat_root, max_per_class, cache_dir, tower_cache, batch_size, model, processor):
    paths, labels, class_names = list_eurosat(eurosat_root, max_per_class)
    if model is None:
        model, processor = load_model(model_dir)
    logger.info("features of %d EuroSAT images (%d classes) from %s", len(paths), len(class_names), eurosat_root)
    features = probe_features(model, processor.image_processor, paths, cache_dir, tower_cache, batch_size)
    return features, labels, class_names, paths


def run_linear_probe(model_dir, eurosat_root, output_dir, max_per_class=None, ratios=TRAIN_RATIOS, n_splits=5,
                     epochs=100, batch_size=100, lr=1e-4, seed=0, cache_dir=None, tower_cache=None,
                     feature_batch_size=8, model=None, processor=None) -> dict:
    """Write OUTPUT/linear_probe.json and OUTPUT/linear_probe.png; returns the result dict.

    `cache_dir` defaults to OUTPUT/feature-cache; pass `model`/`processor` to reuse loaded ones.
    """
    output_dir = Path(output_dir)
    cache_dir = cache_dir if cache_dir is not None else output_dir / "feature-cache"
    features, labels, class_names, _ = _eurosat_features(model_dir, eurosat_root, max_per_class, cache_dir,
                                                         tower_cache, feature_batch_size, model, processor)
    result = linear_probe(features, labels, class_names, ratios, n_splits, epochs, batch_size, lr, seed)
    result.update({"model": str(model_dir), "eurosat": str(eurosat_root)})
    atomic_write_json(output_dir / "linear_probe.json", result)
    plot_linear_probe(result, output_dir / "linear_probe.png")
    logger.info("linear probe: %s and %s", output_dir / "linear_probe.json", output_dir / "linear_probe.png")
    return result


# ----------------------------------------------------------------------------------------------------------
# t-SNE (Fig. 3)
# ----------------------------------------------------------------------------------------------------------


def tsne_embeddings(features: dict, seed: int = 0, perplexity: float = 30.0) -> dict:
    """2-D t-SNE (scikit-learn, PCA init) of each feature kind; the perplexity is capped at (N - 1) / 3."""
    from sklearn.manifold import TSNE

    embedded = {}
    for kind, values in features.items():
        n = len(values)
        if n < 5:
            raise ValueError(f"t-SNE needs at least 5 images, got {n}")
        tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed)
        embedded[kind] = tsne.fit_transform(np.asarray(values, dtype=np.float64))
    return embedded


def plot_tsne(embedded: dict, labels, class_names: Sequence[str], path) -> None:
    """Fig. 3: one scatter per feature kind, side by side, points coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(embedded), figsize=(5.2 * len(embedded) + 2.0, 5.0), squeeze=False)
    for ax, (kind, points) in zip(axes[0], embedded.items()):
        for index, name in enumerate(class_names):
            chosen = labels == index
            ax.scatter(points[chosen, 0], points[chosen, 1], s=12, color=colours(index % colours.N), label=name)
        ax.set_title(FEATURE_TITLES.get(kind, kind), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=1.5)
    _save_figure(fig, path)


def run_tsne(model_dir, eurosat_root, output_dir, max_per_class=None, seed=0, perplexity=30.0, cache_dir=None,
             tower_cache=None, feature_batch_size=8, model=None, processor=None) -> dict:
    """Write OUTPUT/tsne.png and OUTPUT/tsne.json (the 2-D points); returns the JSON dict."""
    output_dir = Path(output_dir)
    cache_dir = cache_dir if cache_dir is not None else output_dir / "feature-cache"
    features, labels, class_names, paths = _eurosat_features(model_dir, eurosat_root, max_per_class, cache_dir,
                                                             tower_cache, feature_batch_size, model, processor)
    embedded = tsne_embeddings(features, seed, perplexity)
    plot_tsne(embedded, labels, class_names, output_dir / "tsne.png")
    result = {"model": str(model_dir), "eurosat": str(eurosat_root), "seed": seed, "class_names": class_names,
              "images": paths, "labels": labels.tolist(),
              "points": {kind: points.round(4).tolist() for kind, points in embedded.items()}}
    atomic_write_json(output_dir / "tsne.json", result)
    logger.info("t-SNE: %s and %s", output_dir / "tsne.png", output_dir / "tsne.json")
    return result


# ----------------------------------------------------------------------------------------------------------
# Generation with the task prompts
# ----------------------------------------------------------------------------------------------------------


def generate_answers(model, processor, paths: Sequence[str], task: str, question: str | None = None,
                     batch_size: int = 4, max_new_tokens: int = 64, tower_cache=None, desc: str | None = None):
    """Greedy answers to the processor's `task` prompt ("caption" | "classification") for each image.

    Returns one dict per image: "text" (decoded, special tokens dropped), "token_ids" and "logprobs" (the
    log-probability of each generated token, up to the end-of-turn token) and, when the image was processed in
    this call, "radiometry" (the image processor's metadata: offset, scale, source rule...). With `tower_cache` (a
    training feature cache dir) the tower output is read from the cache instead of recomputed.
    """
    prompt = processor.build_prompt(task, text=question)
    tokenizer = processor.tokenizer
    stop_ids = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, model.generation_config.eos_token_id)
                if isinstance(i, int)}
    raw_cache = open_tower_cache(tower_cache, model, processor.image_processor, paths, batch_size)
    expanded = prompt.replace(processor.image_token, processor.image_token * processor.num_image_tokens)
    answers = []
    with torch.inference_mode(), single_thread():
        for start in tqdm(range(0, len(paths), batch_size), desc=desc or f"{task} answers", unit="batch"):
            chunk = list(paths[start:start + batch_size])
            metadata = [{}] * len(chunk)
            if raw_cache is not None:
                inputs = dict(tokenizer([expanded] * len(chunk), return_tensors="pt", padding=True))
                inputs["vision_features"] = raw_cache.get([image_id(p) for p in chunk]).to(model.dtype)
            else:
                inputs = dict(processor(images=chunk, text=[prompt] * len(chunk), return_tensors="pt",
                                        return_metadata=True))
                metadata = [{"radiometry": meta["radiometry"]} for meta in inputs.pop("metadata")]
            inputs = {key: value.to(model.device) for key, value in inputs.items()}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 return_dict_in_generate=True, output_scores=True,
                                 pad_token_id=tokenizer.pad_token_id)
            logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            new_tokens = out.sequences[:, inputs["input_ids"].shape[1]:]
            for ids, scores, meta in zip(new_tokens.tolist(), logprobs.tolist(), metadata):
                end = next((k for k, token in enumerate(ids) if token in stop_ids), len(ids))
                answers.append({"text": tokenizer.decode(ids[:end], skip_special_tokens=True).strip(),
                                "token_ids": ids[:end], "logprobs": scores[:end], **meta})
    return answers


def _token_spans(tokenizer, token_ids: Sequence[int]):
    """Character span of each token in `tokenizer.decode(token_ids)` (prefix decoding, exact for any tokenizer)."""
    spans, previous = [], 0
    for k in range(len(token_ids)):
        length = len(tokenizer.decode(token_ids[:k + 1], skip_special_tokens=True))
        spans.append((previous, length))
        previous = length
    return spans


def rank_labels(tokenizer, answer: dict, labels: Sequence[str]) -> list[str]:
    """`labels` (parsed from the answer) most likely first: by the mean log-probability of the generated tokens
    that spell each label; labels not found verbatim in the text keep their order after the found ones."""
    text = tokenizer.decode(answer["token_ids"], skip_special_tokens=True)
    spans = _token_spans(tokenizer, answer["token_ids"])
    scored = []
    for order, label in enumerate(labels):
        position = text.lower().find(label.lower())
        if position < 0:
            scored.append((-math.inf, order, label))
            continue
        end = position + len(label)
        inside = [lp for (a, b), lp in zip(spans, answer["logprobs"]) if a < end and b > position]
        scored.append((float(np.mean(inside)) if inside else -math.inf, order, label))
    return [label for _, _, label in sorted(scored, key=lambda item: (-item[0], item[1]))]


def classify_images(model, processor, paths: Sequence[str], vocabulary: Sequence[str] | None = None,
                    batch_size: int = 4, max_new_tokens: int = 64, tower_cache=None) -> list[dict]:
    """One {"image", "labels", "text"} per image (and "radiometry" when the image was read, not taken from
    `tower_cache`): the `[classification]` answer parsed with parse_labels against `vocabulary` (default: the
    EuroSAT classes and the 19 BigEarthNet classes), most likely first."""
    vocabulary = list(vocabulary) if vocabulary is not None else list(EUROSAT_CLASSES) + list(BEN19_LABELS)
    answers = generate_answers(model, processor, paths, "classification", batch_size=batch_size,
                               max_new_tokens=max_new_tokens, tower_cache=tower_cache, desc="classifying")
    return [{"image": str(path), "labels": rank_labels(processor.tokenizer, answer,
                                                        parse_labels(answer["text"], vocabulary)),
             "text": answer["text"], **({"radiometry": answer["radiometry"]} if "radiometry" in answer else {})}
            for path, answer in zip(paths, answers)]


# ----------------------------------------------------------------------------------------------------------
# Classification metrics
# ----------------------------------------------------------------------------------------------------------


def eurosat_metrics(true: Sequence[str], predictions: Sequence[Sequence[str]], class_names=EUROSAT_CLASSES) -> dict:
    """Accuracy of the first (most likely) EuroSAT class of each prediction; no EuroSAT class counts as wrong
    and lands in the confusion matrix's extra last column "(none)". Rows: true classes, columns: predicted."""
    class_names = list(class_names)
    columns = class_names + [NO_LABEL]
    matrix = np.zeros((len(class_names), len(columns)), dtype=int)
    for truth, labels in zip(true, predictions):
        predicted = next((label for label in labels if label in class_names), NO_LABEL)
        matrix[class_names.index(truth), columns.index(predicted)] += 1
    total = int(matrix.sum())
    return {"accuracy": float(np.trace(matrix[:, :len(class_names)]) / total) if total else math.nan,
            "num_images": total, "no_label": int(matrix[:, -1].sum()),
            "confusion_matrix": {"rows_true": class_names, "columns_predicted": columns, "counts": matrix.tolist()}}


def multilabel_f1(true: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]],
                  classes: Sequence[str] = BEN19_LABELS) -> dict:
    """Micro F1 over all (image, class) decisions and macro F1 averaged over the classes that occur in `true`
    (a class absent from the ground truth has no defined recall); labels outside `classes` are ignored."""
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=list(classes))
    known = set(classes)
    y_true = binarizer.fit_transform([[c for c in labels if c in known] for labels in true])
    y_pred = binarizer.transform([[c for c in labels if c in known] for labels in predictions])
    present = np.flatnonzero(y_true.sum(0))
    per_class = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(per_class[present].mean()) if len(present) else math.nan,
        "num_images": len(true), "classes_in_truth": [classes[i] for i in present],
        "per_class_f1": {classes[i]: float(per_class[i]) for i in present},
    }


def plot_confusion(metrics: dict, path, title: str = "EuroSAT classification from generated text") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = metrics["confusion_matrix"]
    counts = np.asarray(cm["counts"])
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(cm["columns_predicted"])), cm["columns_predicted"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(cm["rows_true"])), cm["rows_true"], fontsize=8)
    for (row, col), value in np.ndenumerate(counts):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > counts.max() / 2 else "black")
    ax.set_xlabel("predicted (first parsed label)")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {100 * metrics['accuracy']:.1f}% on {metrics['num_images']} images", fontsize=9)
    _save_figure(fig, path)


def _write_jsonl(path, rows) -> None:
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))


def run_classify_eval(model_dir, output_dir, eurosat=None, dataset=None, split="test", max_per_class=None,
                      max_samples=None, batch_size=4, max_new_tokens=64, tower_cache=None, model=None,
                      processor=None) -> dict:
    """Classify EuroSAT class folders (`eurosat`) and/or the patches of a Spectral-Inst `split` (`dataset`):
    EuroSAT accuracy + OUTPUT/confusion_matrix.png, BigEarthNet-19 micro/macro F1. Also writes
    OUTPUT/classification.json and OUTPUT/classification_predictions.jsonl."""
    if eurosat is None and dataset is None:
        raise ValueError("give --eurosat ROOT and/or --dataset DIR")
    output_dir = Path(output_dir)
    items = []  # (path, source, true labels)
    if eurosat is not None:
        paths, labels, class_names = list_eurosat(eurosat, max_per_class)
        items += [(path, "eurosat", [class_names[i]]) for path, i in zip(paths, labels)]
    if dataset is not None:
        items += [(row["path"], row["source"], list(row["labels"]))
                  for row in load_patches(dataset, split, max_samples)]
    if model is None:
        model, processor = load_model(model_dir)
    predicted = classify_images(model, processor, [path for path, _, _ in items], batch_size=batch_size,
                                max_new_tokens=max_new_tokens, tower_cache=tower_cache)
    rows = [dict(p, source=source, true=truth) for p, (_, source, truth) in zip(predicted, items)]
    result = {"model": str(model_dir), "eurosat": str(eurosat) if eurosat else None,
              "dataset": str(dataset) if dataset else None, "split": split if dataset else None,
              "prompt": processor.build_prompt("classification"), "parse": "train.spectral_inst.parse_labels"}
    euro = [row for row in rows if row["source"] == "eurosat"]
    ben = [row for row in rows if row["source"] != "eurosat"]
    if euro:
        result["eurosat_classification"] = eurosat_metrics([r["true"][0] for r in euro], [r["labels"] for r in euro])
        plot_confusion(result["eurosat_classification"], output_dir / "confusion_matrix.png")
    if ben:
        result["bigearthnet19"] = multilabel_f1([r["true"] for r in ben], [r["labels"] for r in ben])
    atomic_write_json(output_dir / "classification.json", result)
    _write_jsonl(output_dir / "classification_predictions.jsonl", rows)
    logger.info("classification: %s, %s%s", output_dir / "classification.json",
                output_dir / "classification_predictions.jsonl",
                f", {output_dir / 'confusion_matrix.png'}" if euro else "")
    return result


# ----------------------------------------------------------------------------------------------------------
# Description quality (a): label consistency
# ----------------------------------------------------------------------------------------------------------

# Key phrases that count as a mention of a class. Each is a regular expression matched case-insensitively on
# whole words, with an optional plural "s"/"es" appended. Besides these, the class name itself (CamelCase split
# for EuroSAT) and the phrase the Spectral-Inst template captioner uses for it always match. Rules:
# * longest match first: a matched span is masked, so "industrial buildings" is Industrial only and "salt
#   marsh" Coastal wetlands only, never also Residential / Inland wetlands;
# * generic words shared by several classes ("forest" among the BigEarthNet forests, "water", "vegetation",
#   "field") mention none of them: only distinctive phrases count;
# * a mention preceded in its clause by a negation within three words ("no", "not", "without", "nor",
#   "absence of", "lack of", "free of") is not a mention.
CLASS_PHRASES = {
    # EuroSAT (class folder names)
    "AnnualCrop": [r"annual crop(?:land)?", r"cropland", r"crop ?fields?", r"arable(?: land)?", r"farmland",
                   r"cultivated fields?"],
    "Forest": [r"forest", r"forested", r"woodland"],
    "HerbaceousVegetation": [r"herbaceous(?: vegetation)?", r"shrubland", r"scrubland", r"natural grassland"],
    "Highway": [r"highway", r"motorway", r"freeway", r"expressway", r"major road"],
    "Industrial": [r"industrial(?: buildings| areas?| zones?| units)?", r"factor(?:y|ies)", r"warehouse",
                   r"commercial units"],
    "Pasture": [r"pasture", r"meadow", r"grazing land"],
    "PermanentCrop": [r"permanent crop", r"orchard", r"vineyard", r"olive grove", r"plantation"],
    "Residential": [r"residential(?: buildings| areas?)?", r"houses", r"housing", r"suburb", r"village",
                    r"settlement"],
    "River": [r"river", r"stream", r"watercourse"],
    "SeaLake": [r"sea", r"lake", r"ocean", r"reservoir", r"sea or lake"],
    # BigEarthNet-19
    "Urban fabric": [r"urban fabric", r"urban", r"residential", r"houses", r"housing", r"town", r"city",
                     r"village", r"settlement", r"suburb"],
    "Industrial or commercial units": [r"industrial or commercial units", r"industrial", r"commercial",
                                       r"factor(?:y|ies)", r"warehouse"],
    "Arable land": [r"arable(?: land)?", r"cropland", r"crop ?fields?", r"farmland"],
    "Permanent crops": [r"permanent crop", r"orchard", r"vineyard", r"olive grove", r"fruit trees"],
    "Pastures": [r"pasture", r"meadow", r"grazing land"],
    "Complex cultivation patterns": [r"complex cultivation(?: patterns?)?"],
    "Land principally occupied by agriculture, with significant areas of natural vegetation": [
        r"land principally occupied by agriculture", r"agricultur(?:e|al land) (?:mixed )?with (?:significant "
        r"areas of )?natural vegetation"],
    "Agro-forestry areas": [r"agro-? ?forestry(?: areas?)?"],
    "Broad-leaved forest": [r"broad-? ?leaved(?: forest)?", r"broadleaf(?: forest)?", r"deciduous forest"],
    "Coniferous forest": [r"coniferous(?: forest)?", r"conifer", r"pine forest", r"spruce"],
    "Mixed forest": [r"mixed forest", r"mixed woodland"],
    "Natural grassland and sparsely vegetated areas": [r"natural grassland", r"sparsely vegetated(?: areas?)?",
                                                       r"sparse vegetation"],
    "Moors, heathland and sclerophyllous vegetation": [r"moor", r"moorland", r"heathland", r"heath",
                                                       r"sclerophyllous(?: vegetation)?"],
    "Transitional woodland, shrub": [r"transitional woodland", r"shrub", r"shrubland", r"scrub"],
    "Beaches, dunes, sands": [r"beach", r"dune", r"sand"],
    "Inland wetlands": [r"inland wetland", r"wetland", r"marsh", r"peat ?bog", r"bog", r"swamp", r"fen"],
    "Coastal wetlands": [r"coastal wetland", r"salt ?marsh", r"saline", r"salt pan", r"tidal flat"],
    "Inland waters": [r"inland waters?", r"lake", r"river", r"reservoir", r"pond", r"water ?bod(?:y|ies)",
                      r"water ?courses?", r"canal", r"stream"],
    "Marine waters": [r"marine waters?", r"sea", r"ocean", r"lagoon", r"estuar(?:y|ies)", r"coastal waters?"],
}
NEGATION = re.compile(r"\b(?:no|not|without|nor|absence of|lack of|free of)\b(?:\W+\w+){0,2}\W*$", re.IGNORECASE)


def _class_patterns(vocabulary: Sequence[str]) -> list[tuple[int, str, re.Pattern]]:
    patterns = []
    for name in vocabulary:
        phrases = list(CLASS_PHRASES.get(name, []))
        phrases.append(re.escape(name.lower()))
        phrases.append(re.escape(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()))
        if name in EUROSAT_PHRASES:
            phrases.append(re.escape(re.sub(r"^an? ", "", EUROSAT_PHRASES[name])))
        for phrase in set(phrases):
            regex = re.compile(rf"\b(?:{phrase})(?:e?s)?\b", re.IGNORECASE)
            patterns.append((len(phrase), name, regex))
    return sorted(patterns, key=lambda item: -item[0])


def mentioned_classes(text: str, vocabulary: Sequence[str]) -> list[str]:
    """Classes of `vocabulary` that `text` mentions (see CLASS_PHRASES for the matching rules), sorted."""
    text = text or ""
    masked = list(text)
    found = set()
    for _, name, regex in _class_patterns(vocabulary):
        for match in regex.finditer("".join(masked)):
            start, end = match.span()
            clause = re.split(r"[.;:!?,\n]", text[:start])[-1]
            if not NEGATION.search(clause):
                found.add(name)
            masked[start:end] = " " * (end - start)
    return sorted(found)


def label_consistency(text: str, true_labels: Sequence[str], vocabulary: Sequence[str]) -> dict:
    """The paper's criterion: "recall" = share of the true classes the text mentions, "false_claims" = share
    of the vocabulary's absent classes it mentions anyway."""
    mentioned = set(mentioned_classes(text, vocabulary))
    true = set(true_labels) & set(vocabulary)
    absent = set(vocabulary) - true
    return {"mentioned": sorted(mentioned),
            "recall": len(mentioned & true) / len(true) if true else math.nan,
            "false_claims": len(mentioned & absent) / len(absent) if absent else math.nan}


def vocabulary_of(source: str) -> tuple[str, ...]:
    return EUROSAT_CLASSES if source == "eurosat" else BEN19_LABELS


# ----------------------------------------------------------------------------------------------------------
# Description quality (b): LLaVA-Bench-style judged score
# ----------------------------------------------------------------------------------------------------------

JUDGE_SYSTEM = "You are a strict, fair reviewer of descriptions of satellite images."
JUDGE_TEMPLATE = """You cannot see the image. These facts about it are certain:
{facts}

Question asked about the image:
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{answer}
[End of Assistant 2]

Rate how helpful, relevant, accurate (consistent with the facts) and detailed each answer is. Give each
assistant one overall score from 1 to 10, higher is better. On the first line write only the two scores,
Assistant 1 first, separated by a space. Then explain your rating in one or two sentences."""


def _score(value: str) -> float | None:
    number = float(value)
    return number if 1 <= number <= 10 else None


def parse_judge_scores(text: str) -> tuple[float, float] | None:
    """(score of assistant 1, score of assistant 2) from a judge's reply, or None when unreadable.

    Tried in order: the first non-empty line's first two numbers ("8 6", "8, 6", "8/10 6/10"); then
    "Assistant 1 ... N" / "Assistant 2 ... N" anywhere; then the first two numbers in the text. Scores must lie
    in [1, 10].
    """
    number = r"(\d+(?:\.\d+)?)"
    cleaned = re.sub(r"\s*/\s*10\b", "", text or "")
    lines = [line for line in cleaned.splitlines() if line.strip()]
    candidates = []
    if lines:
        candidates.append(re.findall(number, re.sub(r"assistant\s*[12]", "", lines[0], flags=re.IGNORECASE)))
    labelled = [re.search(rf"assistant\s*{k}\b\D{{0,30}}?{number}", cleaned, re.IGNORECASE) for k in (1, 2)]
    if all(labelled):
        candidates.append([m.group(1) for m in labelled])
    candidates.append(re.findall(number, re.sub(r"assistant\s*[12]", "", cleaned, flags=re.IGNORECASE)))
    for values in candidates:
        if len(values) >= 2:
            first, second = _score(values[0]), _score(values[1])
            if first is not None and second is not None:
                return first, second
    return None


def load_judge(spec: str):
    """(causal LM, tokenizer) of a judge: "smollm2" (the embedded SmolLM2), a local model DIR, or "hf:ID" (from
    the Hub or its local cache); on CUDA when available (bfloat16 for DIR / hf: judges)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "smollm2":
        from modeling_spectral_llava.build import load_llm

        model, tokenizer = load_llm("smollm2")
        return model.eval().to(device), tokenizer
    if spec.startswith("hf:"):
        source = spec[3:]
    elif os.path.isdir(spec):
        source = spec
    else:
        raise FileNotFoundError(f"--judge {spec!r}: expected 'smollm2', a local model directory or 'hf:MODEL_ID'")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval().to(device)
    return model, AutoTokenizer.from_pretrained(source)


def judge_prompt(tokenizer, facts: str, question: str, reference: str, answer: str) -> str:
    content = JUDGE_TEMPLATE.format(facts=facts, question=question, reference=reference, answer=answer)
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{JUDGE_SYSTEM}\n\n{content}\n\nScores:"


def judge_pairs(judge, items: Sequence[dict], max_new_tokens: int = 64) -> list[dict]:
    """Score each {"facts", "question", "reference", "answer"} with ONE prompt showing both answers (as
    LLaVA-Bench does: reference = Assistant 1, model = Assistant 2); greedy decoding."""
    model, tokenizer = judge
    results = []
    with torch.inference_mode():
        for item in tqdm(items, desc="judging", unit="answer"):
            prompt = judge_prompt(tokenizer, item["facts"], item["question"], item["reference"], item["answer"])
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            scores = parse_judge_scores(reply)
            results.append({"reply": reply, "reference_score": scores[0] if scores else None,
                            "model_score": scores[1] if scores else None})
    return results


def relative_score(judged: Sequence[dict]) -> dict:
    """LLaVA-Bench's relative score: 100 x (sum of model scores) / (sum of reference scores) over the pairs
    whose scores parsed, with the means and the number of unparsed replies."""
    parsed = [j for j in judged if j["model_score"] is not None]
    reference = sum(j["reference_score"] for j in parsed)
    return {
        "relative_score": 100.0 * sum(j["model_score"] for j in parsed) / reference if reference else math.nan,
        "model_mean": float(np.mean([j["model_score"] for j in parsed])) if parsed else math.nan,
        "reference_mean": float(np.mean([j["reference_score"] for j in parsed])) if parsed else math.nan,
        "num_judged": len(judged), "parse_failures": len(judged) - len(parsed),
    }


def patch_facts(row: dict) -> str:
    """What the judge is told about a patch: its labels and the metadata of the Spectral-Inst record."""
    facts = [f"Land-cover classes: {'; '.join(row['labels']) or 'unknown'}"]
    if row.get("country"):
        facts.append(f"Country: {row['country']}")
    if row.get("season"):
        facts.append(f"Season: {row['season']}")
    facts.append(f"Seasonal snow: {'yes' if row.get('snow') else 'no'}; "
                 f"cloud or shadow: {'yes' if row.get('cloud') else 'no'}")
    return "\n".join(facts)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def run_quality(model_dir, dataset_dir, output_dir, split="test", judge=None, max_samples=None, batch_size=4,
                max_new_tokens=128, judge_max_new_tokens=64, tower_cache=None, model=None, processor=None) -> dict:
    """Caption the patches of a Spectral-Inst split with the `[caption]` prompt and score the captions:
    label consistency for model and reference captions, and, with `judge`, the LLaVA-Bench-style relative
    score against the dataset's reference caption. Writes OUTPUT/quality.json and OUTPUT/captions.jsonl."""
    output_dir = Path(output_dir)
    rows = load_patches(dataset_dir, split, max_samples)
    if not rows:
        raise ValueError(f"--dataset {dataset_dir}: split {split!r} is empty")
    if model is None:
        model, processor = load_model(model_dir)
    answers = generate_answers(model, processor, [row["path"] for row in rows], "caption", batch_size=batch_size,
                               max_new_tokens=max_new_tokens, tower_cache=tower_cache, desc="captioning")
    question = processor.build_prompt("caption")
    records = []
    for row, answer in zip(rows, answers):
        vocabulary = vocabulary_of(row["source"])
        records.append({"id": row["id"], "image": row["path"], "labels": list(row["labels"]),
                        "caption": answer["text"], "reference": row["caption"],
                        **({"radiometry": answer["radiometry"]} if "radiometry" in answer else {}),
                        "model_consistency": label_consistency(answer["text"], row["labels"], vocabulary),
                        "reference_consistency": label_consistency(row["caption"], row["labels"], vocabulary)})
    result = {
        "model": str(model_dir), "dataset": str(dataset_dir), "split": split, "num_images": len(records),
        "prompt": question,
        "label_consistency": {
            who: {"recall": _mean(r[f"{who}_consistency"]["recall"] for r in records),
                  "false_claims": _mean(r[f"{who}_consistency"]["false_claims"] for r in records)}
            for who in ("model", "reference")},
        "label_matching": "train.evaluate.CLASS_PHRASES: whole-word key phrases, longest match first, generic "
                          "words count for no class, negated mentions ignored",
    }
    if judge is not None:
        judge_model = load_judge(judge) if isinstance(judge, str) else judge
        judged = judge_pairs(judge_model, [
            {"facts": patch_facts(row), "question": TASK_PROMPTS["caption"].split("] ", 1)[-1], "reference": row["caption"],
             "answer": answer["text"]} for row, answer in zip(rows, answers)], judge_max_new_tokens)
        for record, item in zip(records, judged):
            record["judge"] = item
        result["judge"] = {"judge": judge if isinstance(judge, str) else "in-process model",
                           "rubric": "helpfulness, relevance, accuracy, level of detail; 1-10 per answer",
                           **relative_score(judged)}
    atomic_write_json(output_dir / "quality.json", result)
    _write_jsonl(output_dir / "captions.jsonl", records)
    logger.info("description quality: %s and %s", output_dir / "quality.json", output_dir / "captions.jsonl")
    return result


# ----------------------------------------------------------------------------------------------------------
# Model card table
# ----------------------------------------------------------------------------------------------------------

RESULT_FILES = ("linear_probe.json", "classification.json", "quality.json")


def collect_results(folders: Sequence[str | os.PathLike]) -> dict:
    """{"linear_probe": ..., "classification": ..., "quality": ...} from the JSON files that `evaluate` wrote in
    `folders` (the first folder holding a file wins)."""
    results = {}
    for name in RESULT_FILES:
        for folder in folders:
            path = Path(folder) / name
            if path.is_file():
                results[name.removesuffix(".json")] = json.loads(path.read_text())
                break
    if not results:
        raise FileNotFoundError(f"none of {RESULT_FILES} found in {[str(f) for f in folders]}: run `spectral-llava "
                                "evaluate` first")
    return results


def _cell(value, percent=True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def evaluation_table(results: dict) -> str:
    """The model card's evaluation section: one markdown table row per reported number."""
    rows = []
    probe = results.get("linear_probe")
    if probe:
        kinds = list(probe["results"])
        name = "linear probe accuracy, " + " / ".join(FEATURE_TITLES.get(kind, kind).split(" (")[0] for kind in kinds)
        setting = f"EuroSAT, {probe['num_samples']} images, {probe['protocol']['folds']} folds"
        for ratio in sorted({r for by_ratio in probe["results"].values() for r in by_ratio}, key=float):
            cells = [f"{100 * probe['results'][k][ratio]['mean']:.1f} +/- {100 * probe['results'][k][ratio]['std']:.1f}%"
                     if ratio in probe["results"][k] else "n/a" for k in kinds]
            rows.append((name, f"{setting}, {float(ratio):.0%} train", " / ".join(cells)))
    classification = results.get("classification")
    if classification:
        euro = classification.get("eurosat_classification")
        if euro:
            rows.append(("classification from generated text", f"EuroSAT, {euro['num_images']} images",
                         f"accuracy {_cell(euro['accuracy'])}"))
        ben = classification.get("bigearthnet19")
        if ben:
            rows.append(("classification from generated text", f"BigEarthNet-19, {ben['num_images']} patches",
                         f"micro F1 {_cell(ben['micro_f1'], False)}, macro F1 {_cell(ben['macro_f1'], False)}"))
    quality = results.get("quality")
    if quality:
        model = quality["label_consistency"]["model"]
        setting = f"Spectral-Inst {quality['split']}, {quality['num_images']} patches"
        rows.append(("caption label consistency", setting,
                     f"true classes mentioned {_cell(model['recall'])}, absent classes claimed "
                     f"{_cell(model['false_claims'])}"))
        judge = quality.get("judge")
        if judge:
            rows.append((f"judged caption score ({judge['judge']})", setting,
                         f"{judge['relative_score']:.1f}% of the reference ({judge['parse_failures']} of "
                         f"{judge['num_judged']} judge replies unreadable)"))
    lines = ["| evaluation | data | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def card_sources(model_dir) -> dict:
    """The tower and LLM descriptions the model dir's own card states (config.json does not hold them); the
    local SmolLM2 cache path is reported as its Hub id."""
    from modeling_spectral_llava.build import SMOLLM2_ID

    path = Path(model_dir) / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    vision = re.search(r"^\| vision tower \| SpectralGPT \((.*)\), \d+x\d+ px", text, re.MULTILINE)
    llm = re.search(r"^\| language model \| (.+?) \|$", text, re.MULTILINE)
    llm_source = llm.group(1) if llm else "a LLaMA-family LLM"
    if os.path.basename(os.path.normpath(llm_source)) == "smollm2-135m-instruct":
        llm_source = SMOLLM2_ID
    return {"vision_source": vision.group(1) if vision else "SpectralGPT", "llm_source": llm_source}


def render_card(model_dir, result_dirs: Sequence, vision_source: str | None = None, llm_source: str | None = None,
                note: str | None = None) -> str:
    """The Hub model card of `model_dir` with the evaluation table of `result_dirs` (see evaluation_table)."""
    from modeling_spectral_llava.configuration_spectral_llava import SpectralLlavaConfig
    from modeling_spectral_llava.model_card import render_model_card

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json")
    config = SpectralLlavaConfig.from_pretrained(model_dir)
    sources = card_sources(model_dir)
    sources.update({k: v for k, v in (("vision_source", vision_source), ("llm_source", llm_source)) if v})
    evaluation = (f"{note}\n\n" if note else "") + evaluation_table(collect_results(result_dirs)) + (
        "\n\nReproduce with `spectral-llava evaluate linear-probe|tsne|classify|quality` (`train/evaluate.py`); "
        "the table is rendered by `scripts/render_model_card.py`.")
    return render_model_card(config, evaluation=evaluation, **sources)
