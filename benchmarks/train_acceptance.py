"""Real-data acceptance of the two training stages on the repo's EuroSAT subset (tests/data/eurosat-ms).

    python benchmarks/train_acceptance.py --output runs/acceptance

1. `spectral-llava build-dataset --eurosat tests/data/eurosat-ms` (template captioner; 80/10/10 patches);
2. the default model (`build_model`: random ViT-B/8 128x128 tower + SmolLM2-135M-Instruct), here with
   `--layout spectral_mean --spatial-pool 4` (16 visual tokens) so that it trains on two CPU cores;
3. stage 1 (`spectral_llava.train.align`, class-label text by default) and stage 2 (`spectral_llava.train.finetune`, LoRA r=128), both from the
   feature cache;
4. `[classification]` accuracy of OUTPUT/finetune/merged on the held-out test and validation splits (greedy
   generation through the processor from the GeoTIFFs, answers read with `parse_labels`), each against the
   majority-class baseline.

Prints and writes OUTPUT/acceptance.json: the losses of both stages (first/final step, and the means of the first and
last 5 logged steps, or of all of them when a stage logged fewer), the accuracies, the baselines and the run times.
"""

import argparse
import collections
import json
import logging
import os
import sys
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from spectral_llava.utils.fileio import atomic_write_json  # noqa: E402
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor  # noqa: E402
from spectral_llava.inference import EUROSAT_CLASSES, parse_labels  # noqa: E402
from spectral_llava.spectral_inst import load_split, resolve_image_path  # noqa: E402


def classification_accuracy(model_dir, dataset_dir, split="test", batch_size=5):
    """Exact-match accuracy of `[classification]` answers on the patches of `split`, and the generated answers."""
    model, processor = load_model_and_processor(model_dir, device="cpu")
    patches, roots = load_split(dataset_dir, "patches", split)
    prompt = processor.build_prompt("classification")
    answers, correct = [], 0
    for start in range(0, len(patches), batch_size):
        rows = patches.select(range(start, min(start + batch_size, len(patches))))
        inputs = processor(images=[resolve_image_path(r["image_path"], roots) for r in rows],
                           text=[prompt] * len(rows), return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        texts = processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1]:])
        for row, text in zip(rows, texts):
            predicted = parse_labels(text, vocabulary=EUROSAT_CLASSES)
            correct += predicted == sorted(row["labels"])
            answers.append({"id": row["id"], "labels": row["labels"], "answer": text, "parsed": predicted})
    return correct / len(patches), answers


def majority_baseline(dataset_dir, split="test"):
    """Accuracy of always answering the most frequent label set of the train split."""
    train, _ = load_split(dataset_dir, "patches", "train")
    held_out, _ = load_split(dataset_dir, "patches", split)
    majority, _ = collections.Counter(tuple(sorted(labels)) for labels in train["labels"]).most_common(1)[0]
    return sum(tuple(sorted(labels)) == majority for labels in held_out["labels"]) / len(held_out), list(majority)


def loss_summary(result, window=5):
    """First/final step loss and the mean of the first and last `window` logged losses of a stage (of all logged
    losses when there are fewer)."""
    import csv

    with open(result["outputs"]["loss_csv"]) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    window = min(window, len(losses))
    return {"first_loss": losses[0], "final_loss": losses[-1], "mean_window": window,
            "first_mean": sum(losses[:window]) / window, "last_mean": sum(losses[-window:]) / window,
            "steps": result["steps"], "records": result["records"], "seconds": result["seconds"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--eurosat", default=os.path.join(REPO, "tests", "data", "eurosat-ms"))
    parser.add_argument("--align-text", default="class-labels", choices=["class-labels", "scene-description"])
    parser.add_argument("--align-epochs", type=float, default=20)
    parser.add_argument("--align-lr", type=float, default=5e-3)
    parser.add_argument("--finetune-epochs", type=float, default=2)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore")
    from spectral_llava.modeling_spectral_llava.tools.build import build_model
    from spectral_llava.train.align import run_alignment
    from spectral_llava.train.finetune import run_finetune
    from spectral_llava.spectral_inst import BuildConfig, build_dataset

    out = os.path.abspath(args.output)
    times = {}
    start = time.time()
    dataset_dir = os.path.join(out, "spectral-inst")
    build_dataset(BuildConfig(output=dataset_dir, eurosat=args.eurosat))
    times["build_dataset_s"] = round(time.time() - start, 1)

    start = time.time()
    base = os.path.join(out, "base-model")
    if not os.path.isfile(os.path.join(base, "model.safetensors")):
        build_model(base, layout="spectral_mean", spatial_pool=4)
    times["build_model_s"] = round(time.time() - start, 1)

    cache = os.path.join(out, "feature-cache")
    align = run_alignment(base, dataset_dir, os.path.join(out, "align"), text=args.align_text,
                          epochs=args.align_epochs, lr=args.align_lr, batch_size=args.batch_size, grad_accum=1,
                          cache_features=cache, save_steps=1000, overwrite=True)
    finetune = run_finetune(align["outputs"]["model"], dataset_dir, os.path.join(out, "finetune"),
                            epochs=args.finetune_epochs, batch_size=args.batch_size, grad_accum=1,
                            lr=args.finetune_lr, cache_features=cache, save_steps=1000, overwrite=True)
    times["align_s"], times["finetune_s"] = align["seconds"], finetune["seconds"]

    start = time.time()
    accuracy, answers = classification_accuracy(finetune["outputs"]["merged"], dataset_dir)
    times["evaluate_s"] = round(time.time() - start, 1)
    validation_accuracy, validation_answers = classification_accuracy(finetune["outputs"]["merged"], dataset_dir,
                                                                      split="validation")
    baseline, majority = majority_baseline(dataset_dir)
    validation_baseline, _ = majority_baseline(dataset_dir, split="validation")
    stages = {"align": loss_summary(align), "finetune": loss_summary(finetune)}
    report = {
        **stages,
        "test_accuracy": accuracy, "majority_baseline": baseline, "majority_labels": majority,
        "beats_baseline": accuracy > baseline,
        "validation_accuracy": validation_accuracy, "validation_majority_baseline": validation_baseline,
        "losses_decrease": all(stage["last_mean"] < stage["first_mean"] for stage in stages.values()),
        "seconds": times, "answers": answers, "validation_answers": validation_answers,
    }
    atomic_write_json(os.path.join(out, "acceptance.json"), report)
    print(json.dumps({key: value for key, value in report.items() if not key.endswith("answers")}, indent=1))
    return report


if __name__ == "__main__":
    main()
