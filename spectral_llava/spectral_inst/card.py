"""The dataset card (README.md) of a Spectral-Inst build."""

from __future__ import annotations


def dataset_card(build_info: dict, report: dict) -> str:
    licence = "mit" if set(build_info["image_roots"]) == {"eurosat"} else (
        "cdla-permissive-1.0" if "eurosat" not in build_info["image_roots"] else "other")
    lines = ["---", f"license: {licence}", "task_categories:", "- image-text-to-text",
             "- image-classification", "tags:", "- remote-sensing", "- sentinel-2", "- multispectral", "configs:"]
    for name, sizes in build_info["sizes"].items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in sizes:
            lines += [f"  - split: {split}", f"    path: {name}/{split}/*.arrow"]
    lines.append("---")
    table = "\n".join(f"| {name} | " + ", ".join(f"{s}: {n}" for s, n in sizes.items()) + " |"
                      for name, sizes in build_info["sizes"].items())
    thresholds = "\n".join(f"- `{key}`: {value}" for key, value in build_info["thresholds"].items())
    indices = "\n".join(f"- `{key}` = {value}" for key, value in build_info["indices"].items())
    roots = "\n".join(f"- `{source}`: `{root}`" for source, root in build_info["image_roots"].items())
    return "\n".join(lines) + f"""

# Spectral-Inst

Multispectral Sentinel-2 instruction data for Spectral-LLaVA, built by `spectral-llava build-dataset`
(captioner `{build_info['captioner']}`, seed {build_info['seed']}).

| config | rows per split |
|---|---|
{table}

- `patches`: one row per patch: `id`, `source` (reben | bigearthnet-v1 | eurosat), `split`, `image_path`
  (`<source>/<path>` under the source root listed in `build_info.json`), `rgb_path` (PNG in this repo),
  `labels` (reBEN 19 classes or the EuroSAT class), `country`, `acquisition_date`, `season`
  (meteorological, hemisphere-aware), `latitude`/`longitude` (WGS84 centre from the patch georeference),
  `snow`/`cloud` flags, spectral summary, `caption` and the `caption_prompt` it was generated from.
- `alignment`: two LLaVA records per patch, `variant` = `labels` (class-label text) or `description`.
- `instructions`: two LLaVA records per patch, `task` = `caption` (`[caption]` -> description) or
  `classification` (`[classification]` -> labels).

Image roots of this build (`image_path` = `<source>/<path under the root>`; also in `build_info.json`):
{roots}

Records use the LLaVA form `{{"id", "image", "conversations": [{{"from": "human", "value": "<image>\\n..."}},
{{"from": "gpt", "value": ...}}]}}`. Classification answers are always `Labels: A; B; C` with the labels sorted
alphabetically (`spectral_inst.format_labels` / `parse_labels`).

RGB renderings: {build_info['rgb_stretch']}.

Spectral indices (reflectance = DN / 10000):
{indices}

Thresholds of the pixel fractions and flags:
{thresholds}

Captions are model- or template-generated pseudo-labels (the paper treats them as pseudo-data).
Skipped patches of the last build: {len(report['skipped'])} (see `report.json`).

Sources and licences: reBEN / BigEarthNet (Clasen et al. 2024; Sumbul et al. 2019), CDLA-Permissive-1.0;
EuroSAT (Helber et al. 2019), MIT. Contains modified Copernicus Sentinel data.
"""
