"""Estimate the GPU memory of stage 2 (LoRA) for SpectralGPT ViT-B + Llama-3-8B, per GPU: one GPU in bf16 / 8-bit /
4-bit, and DeepSpeed ZeRO-3 / FSDP over 2, 4 and 8 GPUs. An estimate, not a measurement.

    python scripts/memory_estimate.py [--seq-len 1152] [--lora-r 128] [--micro-batch 1]

Parameter counts come from the real model classes built on the meta device (no weights): `LlamaForCausalLM` with
Llama-3-8B's published configuration (benchmarks/configs/llama3_8b.json), the default `SpectralGPTConfig` (ViT-B/8,
128x128) and the `tokens` layout's linear projector. Bytes per parameter, activations per token and the sharding
model are written out in docs/training.md ("Memory for Llama-3-8B").
"""

import argparse
import os
import sys
from dataclasses import dataclass

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from spectral_llava.modeling_spectral_llava.configuration_spectral_llava import SpectralGPTConfig  # noqa: E402
from spectral_llava.modeling_spectral_llava.modeling_spectralgpt import SpectralGPTVisionModel  # noqa: E402

# the shapes of meta-llama/Meta-Llama-3-8B-Instruct's config.json (also what benchmarks/gpu_check.py trains)
LLAMA3_8B_CONFIG = os.path.join(REPO, "benchmarks", "configs", "llama3_8b.json")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GiB = 1024 ** 3
# bytes per decoder-layer linear weight: bf16; LLM.int8 (int8 + one fp32 scale per row, ~0); NF4 4-bit with double
# quantisation (4 bits + 8-bit absmax per 64 weights + fp32 per 256 absmax)
LINEAR_BYTES = {"bf16": 2.0, "8-bit": 1.0, "4-bit": 0.5 + 1 / 64 + 4 / (64 * 256)}


@dataclass
class Counts:
    linear: int  # decoder-layer linear weights (what bitsandbytes quantizes)
    embeddings: int  # embed_tokens + lm_head (never quantized)
    other: int  # norms
    tower: int
    projector: int
    lora: int
    layer: int  # parameters of one decoder layer
    layers: int
    hidden: int
    kv_width: int
    intermediate: int
    vocab: int

    @property
    def frozen_llm(self):
        return self.linear + self.embeddings + self.other

    @property
    def trainable(self):
        return self.lora + self.projector


def count_parameters(lora_r: int, llm_config=None, vision_config: SpectralGPTConfig | None = None) -> Counts:
    """Counts for LoRA rank `lora_r` on a `LlamaConfig` (default Llama-3-8B) and a tower (default ViT-B/8)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = llm_config or LlamaConfig.from_json_file(LLAMA3_8B_CONFIG)
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)
        tower = SpectralGPTVisionModel(vision_config or SpectralGPTConfig())
    linears = [m for name, m in llm.model.layers.named_modules() if name.endswith(LORA_TARGETS)]
    linear = sum(m.weight.numel() for m in linears)
    embeddings = llm.model.embed_tokens.weight.numel() + llm.lm_head.weight.numel()
    total = sum(p.numel() for p in llm.parameters())
    width, hidden = tower.config.hidden_size, config.hidden_size  # `tokens` layout: one visual token = D wide
    return Counts(
        linear=linear, embeddings=embeddings, other=total - linear - embeddings,
        tower=sum(p.numel() for p in tower.parameters()), projector=width * hidden + hidden,
        lora=sum(lora_r * (m.in_features + m.out_features) for m in linears),
        layer=sum(p.numel() for p in llm.model.layers[0].parameters()), layers=config.num_hidden_layers,
        hidden=hidden, kv_width=config.num_key_value_heads * config.head_dim,
        intermediate=config.intermediate_size, vocab=config.vocab_size,
    )


def activation_bytes_per_token_layer(c: Counts) -> float:
    """bf16 tensors autograd keeps for one token in one decoder layer under LoRA with dropout (no checkpointing).

    Attention: norm input and output, a dropout copy of the input per LoRA'd projection (q, k, v, o), q, k, v, rotated
    q and k, the attention output (SDPA keeps no score matrix): 13 h + 3 kv elements. MLP: norm input and output,
    dropout copies for gate, up and down, gate and up outputs, SiLU(gate), their product: 4 h + 5 i elements (the
    down-projection copy is i wide). Plus one byte per element of the 7 dropout masks (6 h + i).
    """
    h, kv, i = c.hidden, c.kv_width, c.intermediate
    return 2 * (9 * h + 3 * kv + 4 * h + 5 * i) + (6 * h + i)


def estimate(c: Counts, seq_len: int, micro_batch: int) -> dict:
    tokens = seq_len * micro_batch
    per_layer = activation_bytes_per_token_layer(c) * tokens
    logits = c.vocab * tokens * (2 + 4 + 4)  # bf16 logits, their float32 copy for the loss, its gradient
    activations = {"none": c.layers * per_layer + logits,
                   # checkpointing keeps each layer's bf16 input, recomputes one layer at a time
                   "checkpointing": c.layers * 2 * c.hidden * tokens + per_layer + logits}
    trainable_states = 16 * c.trainable  # float32 weight, gradient, Adam m and v
    rows = {}
    for precision, linear_bytes in LINEAR_BYTES.items():
        if precision == "bf16":
            frozen = 2 * (c.frozen_llm + c.tower)
        else:  # peft's prepare_model_for_kbit_training casts every non-quantized weight to float32
            frozen = linear_bytes * c.linear + 4 * (c.embeddings + c.other + c.tower)
        rows[precision] = {"frozen weights": frozen, "trainable states": trainable_states,
                           "1 GPU": frozen + trainable_states + activations["none"],
                           "1 GPU, checkpointing": frozen + trainable_states + activations["checkpointing"]}
    # sharded over N GPUs (bf16 only: quantized weights train on one GPU or with DDP, a full copy per GPU)
    gather = 2 * (c.embeddings + 2 * c.layer)  # FSDP root unit (embeddings, lm_head) + two prefetched layers, bf16
    # ZeRO-3 casts the model to bf16 and keeps float32 master weights in the optimizer (16 bytes per trainable);
    # FSDP loads the model in float32 (one dtype per flat parameter) and computes in bf16
    for name, frozen_bytes in (("ZeRO-3", 2), ("FSDP", 4)):
        for n in (2, 4, 8):
            sharded = (frozen_bytes * (c.frozen_llm + c.tower) + trainable_states) / n
            rows["bf16"][f"{name} x{n}"] = sharded + gather + activations["checkpointing"]
    return {"activations": activations, "rows": rows, "per_layer": per_layer, "logits": logits, "gather": gather}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=1152, help="tokens per sequence (1024 visual + text)")
    parser.add_argument("--lora-r", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU and micro-step")
    args = parser.parse_args(argv)
    c = count_parameters(args.lora_r)
    result = estimate(c, args.seq_len, args.micro_batch)
    print(f"Llama-3-8B: {(c.frozen_llm) / 1e9:.3f} B parameters (decoder linears {c.linear / 1e9:.3f} B, embeddings + "
          f"lm_head {c.embeddings / 1e9:.3f} B); SpectralGPT ViT-B {c.tower / 1e6:.1f} M; projector "
          f"{c.projector / 1e6:.2f} M; LoRA r={args.lora_r} {c.lora / 1e6:.1f} M")
    print(f"activations per token and layer: {activation_bytes_per_token_layer(c) / 1024:.0f} KiB; per micro-batch "
          f"({args.micro_batch} x {args.seq_len} tokens): no checkpointing {result['activations']['none'] / GiB:.1f} "
          f"GiB, with checkpointing {result['activations']['checkpointing'] / GiB:.1f} GiB (logits "
          f"{result['logits'] / GiB:.1f} GiB of it)")
    print()
    columns = list(result["rows"]["bf16"])
    print("| LLM weights | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for precision, row in result["rows"].items():
        cells = [f"{row[k] / GiB:.1f}" if k in row else "-" for k in columns]
        print(f"| {precision + (' (QLoRA)' if precision == '4-bit' else '')} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
