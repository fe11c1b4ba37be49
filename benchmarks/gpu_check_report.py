"""The report of benchmarks/gpu_check.py: OUTPUT/gpu_check.json and the Markdown table OUTPUT/gpu_check.md, both
rewritten (atomically) after every setting, so that a run cut short keeps what it measured.

Per section: its status (ok, partial, skipped, error), the reason of an error, its seconds, and one row per setting
with the setting, the measurement, the estimate it is compared with (or null) and the row's status and reason.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback

import torch

from spectral_llava.utils.fileio import atomic_write_json, atomic_write_text

GiB = 1024 ** 3
SHARE_SPENT = "this section's share of --budget was spent"


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(folder: str) -> str | None:
    """The checkout's commit, or None where git or the repository's history is not there (a copied tree)."""
    try:
        result = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def environment(device: torch.device, repo: str) -> dict:
    """What the numbers were measured with: the device, the date and the versions."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "device_memory_gib": torch.cuda.get_device_properties(device).total_memory / GiB if cuda else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        **{name: package_version(name) for name in ("transformers", "peft", "accelerate", "bitsandbytes")},
        "commit": git_commit(repo),
    }


def describe(error: BaseException) -> str:
    """`Type: message (at file:line)` of the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {str(error).strip()[:600]}{where}"


class Section:
    """One section of the report; `measure` runs one setting and records what it gives, or why it gave nothing."""

    def __init__(self, report: Report, title: str, deadline: float):
        self.report, self.deadline, self.started = report, deadline, time.monotonic()
        self.data = {"title": title, "status": "running", "reason": None, "seconds": None, "rows": []}

    def measure(self, setting: dict, measure, estimate: dict | None = None, needs_s: float = 0.0) -> dict | None:
        """Run `measure()` unless the section's share of the budget is spent or would be by `needs_s` seconds (what a
        like setting took); record its measurement (returned) or the error it raised."""
        row = {"setting": setting, "measurement": None, "estimate": estimate, "status": "ok", "reason": None}
        left = self.deadline - time.monotonic()
        if left <= 0:
            row.update(status="skipped", reason=SHARE_SPENT)
        elif needs_s > left:
            row.update(status="skipped", reason=f"needs about {needs_s:.0f} s (as the last like setting took), "
                                                f"{left:.0f} s of this section's share of --budget left")
        else:
            try:
                row["measurement"] = measure()
            except Exception as error:  # fail soft: the other settings still run
                traceback.print_exc()
                row.update(status="error", reason=describe(error), traceback=traceback.format_exc())
        measured = (row["measurement"] or {}).get("peak_allocated_gib")
        if estimate is not None and measured is not None:
            estimate["measured_over_estimate"] = measured / estimate["peak_gib"]
        self._add(row)
        return row["measurement"]

    def unmeasured(self, setting: dict, status: str, reason: str) -> None:
        """A setting that was not measured: "skipped" (cannot run here, or out of time) or "error"."""
        self._add({"setting": setting, "measurement": None, "estimate": None, "status": status, "reason": reason})

    def skip(self, reason: str) -> None:
        self.data.update(status="skipped", reason=reason)

    def fail(self, error: BaseException) -> None:
        traceback.print_exc()
        self.data.update(status="error", reason=describe(error), traceback=traceback.format_exc())

    def done(self) -> None:
        self.data["seconds"] = time.monotonic() - self.started
        if self.data["status"] == "running":
            statuses = {row["status"] for row in self.data["rows"]}
            if statuses == {"ok"}:
                self.data["status"] = "ok"
            elif "ok" in statuses:
                self.data["status"] = "partial"
            else:
                self.data["status"] = "error" if "error" in statuses else "skipped"
        self.report.write()

    def _add(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.report.write()


class Report:
    def __init__(self, output: str, mode: str, device: torch.device, budget: float, repo: str):
        self.output, self.started = output, time.monotonic()
        self.data = {"mode": mode, "budget_s": budget, "seconds": None, "environment": environment(device, repo),
                     "project_modules": [], "sections": {}}

    def section(self, name: str, title: str, deadline: float) -> Section:
        section = Section(self, title, deadline)
        self.data["sections"][name] = section.data
        self.write()
        return section

    def finish(self) -> dict:
        self.data["seconds"] = time.monotonic() - self.started
        self.write()
        return self.data

    def write(self) -> None:
        self.data["seconds"] = time.monotonic() - self.started
        # what of this project the run imported: the model code only, never readers or scene code
        self.data["project_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "spectral_llava")
        atomic_write_json(os.path.join(self.output, "gpu_check.json"), self.data)
        atomic_write_text(os.path.join(self.output, "gpu_check.md"), markdown(self.data))


def _value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _cells(values: dict | None, skip=()) -> str:
    if not values:
        return "-"
    return ", ".join(f"{key}={_value(value)}" for key, value in values.items() if value is not None and key not in skip)


def _estimate_cell(estimate: dict | None) -> str:
    if not estimate:
        return "-"
    cell = f"{estimate['peak_gib']:.3g} GiB (memory table: {estimate['table_row']}, {estimate['table_column']})"
    if "measured_over_estimate" in estimate:
        cell += f"; measured/estimate {estimate['measured_over_estimate']:.2f}"
    return cell


def _status_cell(status: str, reason: str | None) -> str:
    text = f"{status}: {reason}" if reason else status
    return text.replace("|", "/").replace("\n", " ")


def markdown(data: dict) -> str:
    env = data["environment"]
    memory = f" ({env['device_memory_gib']:.1f} GiB)" if env["device_memory_gib"] else ""
    versions = ", ".join(f"{name} {env[name]}" for name in ("torch", "transformers", "peft", "accelerate",
                                                           "bitsandbytes") if env[name])
    lines = [
        f"# GPU check ({data['mode']})", "",
        f"{env['device']}{memory}; {env['date']}; Python {env['python']}, {versions}, CUDA {env['cuda'] or '-'}; "
        f"commit {env['commit'] or '-'}; {data['seconds']:.0f} s of a {data['budget_s']:g} s budget.", "",
        "| Section | Setting | Measurement | Estimate | Status |", "|---|---|---|---|---|",
    ]
    for section in data["sections"].values():
        for row in section["rows"]:
            lines.append(f"| {section['title']} | {_cells(row['setting'])} | {_cells(row['measurement'])} | "
                         f"{_estimate_cell(row['estimate'])} | {_status_cell(row['status'], row['reason'])} |")
        if section["status"] == "error" or section["reason"] or not section["rows"]:
            lines.append(f"| {section['title']} | - | - | - | {_status_cell(section['status'], section['reason'])} |")
    return "\n".join(lines) + "\n"
