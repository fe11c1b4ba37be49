"""How torch runs here: whether a device computes bfloat16 natively, and a one-thread context for small matrices."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX); elsewhere
    bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


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
