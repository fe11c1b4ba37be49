"""Training step time with and without the frozen-encoder feature cache; prints the ratio cached/uncached.

    python benchmarks/train_step.py                       # builds the default model (ViT-B/8 128x128 + SmolLM2)
    python benchmarks/train_step.py --model DIR --stage finetune --batch-size 4 --steps 5

The two modes alternate step by step (median over the timed steps). One step = collate (uncached: read +
normalise the GeoTIFFs; cached: read the tower features from the cache) + forward + backward + Adam step, with
the stage's trainable parameters (align: projector; finetune: LoRA r=128 + projector). Images and prompts come
from the repo's EuroSAT subset.
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from spectral_llava.inference import EUROSAT_CLASSES, format_labels  # noqa: E402
from spectral_llava.inference.feature_cache import FeatureCache, feature_fingerprint, tower_encoder  # noqa: E402
from spectral_llava.modeling_spectral_llava.tools.loading import load_model_and_processor  # noqa: E402
from spectral_llava.train.align import ALIGN  # noqa: E402
from spectral_llava.train.data import SpectralLlavaCollator  # noqa: E402
from spectral_llava.train.finetune import FINETUNE  # noqa: E402

EUROSAT = os.path.join(REPO, "tests", "data", "eurosat-ms")


def eurosat_records(count):
    """Classification records over the first image of each EuroSAT class, cycled to `count`."""
    records = []
    for index in range(count):
        name = EUROSAT_CLASSES[index % len(EUROSAT_CLASSES)]
        files = sorted(os.listdir(os.path.join(EUROSAT, name)))
        image = files[(index // len(EUROSAT_CLASSES)) % len(files)]
        records.append({
            "patch_id": f"{name}/{image}", "image": f"eurosat/{name}/{image}",
            "conversations": [{"from": "human", "value": "<image>\n[classification] Which land-cover classes are "
                                                          "present in this image?"},
                              {"from": "gpt", "value": format_labels([name])}],
        })
    return records


def time_steps(model, collators, batches, warmup):
    """Median step seconds per collator; the modes alternate step by step so that load changes hit both alike."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = {name: [] for name in collators}
    for index, records in enumerate(batches):
        for name, collator in collators.items():
            start = time.perf_counter()
            loss = model(**collator(records)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model dir (default: build the default model into a temporary dir)")
    parser.add_argument("--layout", default="tokens", help="layout of a built model (default tokens)")
    parser.add_argument("--spatial-pool", type=int, default=1, help="spatial pool of a built model (default 1)")
    parser.add_argument("--stage", choices=["align", "finetune"], default="align")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if model_dir is None:
            from spectral_llava.modeling_spectral_llava.tools.build import build_model

            model_dir = os.path.join(scratch, "model")
            build_model(model_dir, layout=args.layout, spatial_pool=args.spatial_pool)
        model, processor = load_model_and_processor(model_dir, device="cpu")
        model.freeze_vision_tower()
        stage = ALIGN if args.stage == "align" else FINETUNE
        model = stage.prepare(model, stage.options())
        model.train()

        records = eurosat_records(args.batch_size * (args.steps + 1))
        batches = [records[i: i + args.batch_size] for i in range(0, len(records), args.batch_size)]
        roots = {"eurosat": EUROSAT}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        images = {r["patch_id"]: os.path.join(EUROSAT, r["image"].split("/", 1)[1]) for r in records}
        start = time.perf_counter()
        cache = FeatureCache(os.path.join(scratch, "features"), feature_fingerprint(base, processor.image_processor))
        cache.build(images, tower_encoder(base, processor.image_processor), batch_size=args.batch_size)
        cache_seconds = time.perf_counter() - start

        collators = {"uncached": SpectralLlavaCollator(processor, roots),
                     "cached": SpectralLlavaCollator(processor, roots, cache)}
        medians = time_steps(model, collators, batches, warmup=1)
        uncached, cached = medians["uncached"], medians["cached"]
    config = base.config
    result = {
        "stage": args.stage, "batch_size": args.batch_size, "timed_steps": args.steps,
        "image_size": config.vision_config.image_size, "tower_width": config.vision_config.hidden_size,
        "tower_depth": config.vision_config.num_hidden_layers, "visual_tokens": base.num_image_tokens,
        "threads": torch.get_num_threads(),
        "uncached_step_s": round(uncached, 4), "cached_step_s": round(cached, 4),
        "cache_build_s_per_image": round(cache_seconds / len(images), 4),
        "ratio_cached_over_uncached": round(cached / uncached, 4),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
