"""SpectralGPT ViT-B/8 128x128 forward speed on this CPU, against a plain matmul measured in the same run.

Prints, for batch 1 and 8, fp32, `torch.autocast("cpu", dtype=torch.bfloat16)` ("bf16") and autocast over a
copy of the frozen tower stored in bfloat16 ("bf16w", no per-call weight casts): seconds per forward, achieved
GFLOP/s, the ratio to the matmul rate of the same dtype, the speed-up over fp32 and the cosine similarity to
the fp32 outputs. Goals: fp32 >= 85% of the matmul rate; bf16 >= 2.3x fp32, cosine >= 0.999.

    python benchmarks/encoder.py [--batch-sizes 1 8] [--repeats 3]
"""

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralGPTConfig  # noqa: E402
from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel  # noqa: E402


def encoder_flops(config, batch):
    """Multiply-adds x 2 of one forward: tubelet conv, attention projections, attention scores, MLP."""
    tokens = config.num_spectral_groups * (config.image_size // config.patch_size) ** 2
    dim, hidden = config.hidden_size, config.intermediate_size
    conv = tokens * dim * config.bands_per_group * config.patch_size**2
    per_layer = 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden
    return 2 * batch * (conv + config.num_hidden_layers * per_layer)


def timed(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(dtype, repeats):
    """GFLOP/s of a (1024 x 768) @ (768 x 3072) matmul, the shape of the encoder's MLP at batch 1."""
    a, b = torch.randn(8192, 768, dtype=dtype), torch.randn(768, 3072, dtype=dtype)
    seconds = timed(lambda: torch.mm(a, b), repeats)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = SpectralGPTConfig()  # ViT-B/8, 128x128, 12 bands in groups of 3
    model = SpectralGPTVisionModel(config).eval()
    models = {"fp32": model, "bf16": model, "bf16w": copy.deepcopy(model).to(torch.bfloat16)}
    rates = {"fp32": matmul_rate(torch.float32, args.repeats), "bf16": matmul_rate(torch.bfloat16, args.repeats)}
    print(f"threads: {torch.get_num_threads()}  matmul GFLOP/s: fp32 {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f}")
    print(f"{'batch':>5} {'dtype':>5} {'s/forward':>10} {'GFLOP/s':>8} {'vs matmul':>9} {'speed-up':>13} {'cosine':>8}")
    for batch in args.batch_sizes:
        pixels = torch.rand(batch, 12, config.image_size, config.image_size)
        flops = encoder_flops(config, batch)
        outputs, seconds = {}, {}
        with torch.inference_mode():
            for name, tower in models.items():
                def forward(name=name, tower=tower):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name != "fp32"):
                        outputs[name] = tower(pixels).last_hidden_state.float()

                seconds[name] = timed(forward, args.repeats)
        for name in models:
            achieved = flops / seconds[name] / 1e9
            rate = rates["fp32" if name == "fp32" else "bf16"]
            speedup = f"{seconds['fp32'] / seconds[name]:.2f}x" if name != "fp32" else ""
            cosine = torch.nn.functional.cosine_similarity(
                outputs[name].flatten(1), outputs["fp32"].flatten(1), dim=1
            ).min().item()
            cos = f"{cosine:.5f}" if name != "fp32" else ""
            print(f"{batch:>5} {name:>5} {seconds[name]:>10.3f} {achieved:>8.1f} {achieved / rate:>9.2f} "
                  f"{speedup:>13} {cos:>8}")


if __name__ == "__main__":
    main()
