"""Reader throughput: BigEarthNet patch folders -> model tensors through a torch DataLoader.

Each worker reads a patch folder (12 single-band GeoTIFFs at 10/20/60 m), resamples onto the 10 m grid,
fills no-data, applies the SpectralGPT normalisation and resizes to the model size; the main process collates.
Prints patches/s through the DataLoader and the processor's single-process cost per image (read + normalise +
resize). Goal: >= 300 patches/s with 2 workers on 2 cores.

    python benchmarks/reader.py [--data tests/data/bigearthnet-v1] [--patches 2000] [--workers 2]
"""

import argparse
import glob
import os
import resource
import sys
import time

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from spectral_llava.processing.image_processing_spectral_llava import SpectralImageProcessor  # noqa: E402


class PatchFolders(Dataset):
    """One item per patch folder; with `batched`, an item is a list of indices processed in one processor call."""

    def __init__(self, folders: list[str], processor: SpectralImageProcessor):
        self.folders = folders
        self.processor = processor

    def __len__(self):
        return len(self.folders)

    def __getitem__(self, index):
        if isinstance(index, list):
            out = self.processor([self.folders[i] for i in index])
            return out["pixel_values"], out["band_mask"]
        out = self.processor(self.folders[index])
        return out["pixel_values"][0], out["band_mask"][0]


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the DataLoader workers once they exit)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def throughput(dataset, workers: int, batch_size: int, batched: bool) -> tuple[float, float, torch.Tensor]:
    """(patches/s wall, patches per CPU-second, last batch) through a DataLoader; `batched`: each worker builds
    whole batches (no per-item collate). The CPU rate stays meaningful when other jobs share the cores."""
    if batched:
        sampler = BatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=False)
        loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers,
                            prefetch_factor=4 if workers else None)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                            prefetch_factor=4 if workers else None)
    count = 0
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for pixel_values, band_mask in loader:
        count += pixel_values.shape[0]
        assert band_mask.all()
    elapsed = time.perf_counter() - start
    del loader  # joins the workers so their CPU time is counted
    assert count == len(dataset)
    return count / elapsed, count / (cpu_seconds() - cpu_start), pixel_values


def patch_folders(root: str) -> list[str]:
    folders = sorted({os.path.dirname(path) for path in glob.glob(os.path.join(root, "**", "*_B02.tif"),
                                                                   recursive=True)})
    if not folders:
        raise SystemExit(f"no BigEarthNet patch folders (files *_B02.tif) under {root}")
    return folders


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
    parser.add_argument("--data", default=os.path.join(root, "bigearthnet-v1"))
    parser.add_argument("--patches", type=int, default=2000, help="patches per timed pass (folders repeated)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()

    folders = patch_folders(args.data)
    processor = SpectralImageProcessor(image_size=args.image_size)
    items = [folders[i % len(folders)] for i in range(args.patches)]

    for folder in folders:  # warm the page cache and check every folder reads
        processor(folder)
    torch.set_num_threads(1)  # as in a DataLoader worker
    timed = items[:300]
    wall, cpu = time.perf_counter(), time.process_time()
    images = [processor.read(folder) for folder in timed]
    read_wall, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    for image in images:
        processor.resize([processor.normalise(image)[0]])
    rest_wall, rest_cpu = time.perf_counter() - wall, time.process_time() - cpu
    per_image_ms = (read_wall + rest_wall) / len(timed) * 1e3
    per_image_cpu_ms = (read_cpu + rest_cpu) / len(timed) * 1e3

    dataset = PatchFolders(items, processor)
    load_before = os.getloadavg()[0]
    per_item, per_item_cpu, pixel_values = throughput(dataset, args.workers, args.batch_size, batched=False)
    per_batch, per_batch_cpu, _ = throughput(dataset, args.workers, args.batch_size, batched=True)
    assert pixel_values.shape[1:] == (12, args.image_size, args.image_size)

    print(f"folders: {len(folders)} distinct BigEarthNet patches from {args.data}, {len(items)} loaded per pass")
    print(f"processor cost per image (1 process, 1 thread): {per_image_ms:.2f} ms wall, {per_image_cpu_ms:.2f} ms CPU "
          f"(read + resample {read_cpu / len(timed) * 1e3:.2f} ms, normalise + resize "
          f"{rest_cpu / len(timed) * 1e3:.2f} ms CPU) -> {1e3 / per_image_cpu_ms:.0f} patches/s per free core")
    print(f"DataLoader, {args.workers} workers, batch {args.batch_size}: {per_item:.0f} patches/s per-item "
          f"collate, {per_batch:.0f} patches/s with whole batches per worker (includes worker start-up; goal >= 300 "
          f"on 2 cores; load average {load_before:.1f} on {os.cpu_count()} cores when it started)")
    print(f"CPU efficiency (workers + main process): {per_item_cpu:.0f} / {per_batch_cpu:.0f} patches per CPU-second "
          f"-> {2 * per_item_cpu:.0f} / {2 * per_batch_cpu:.0f} patches/s on 2 otherwise idle cores")


if __name__ == "__main__":
    main()
