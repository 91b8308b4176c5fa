"""What machine a measurement ran on: CPU name, cores, instruction sets, software versions.

One description for every report that records its machine (``rdkit bench``'s
sweep.json, the benchmark scripts' tables), so figures measured on different
machines can be told apart. The CPU's instruction-set extensions matter for
speed (AVX-512, AMX and bf16 change what torch's kernels do) and for
cross-machine decoding (see docs/format.md).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from rdkit_ae.worker_setup import available_cores

# The instruction-set extensions that change torch's CPU kernels, as Linux names them in /proc/cpuinfo
# (x86 "flags", Arm "Features"); any other flag is left out of the reports.
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "bf16", "i8mm", "sme",
)  # fmt: skip


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """(CPU model name, ISA flags of interest in :data:`ISA_FLAGS` order) from /proc/cpuinfo's text."""
    name: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and name is None and value.strip():
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, [f for f in ISA_FLAGS if f in flags]


def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None, []


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    return _cpuinfo()[0] or platform.processor() or platform.machine() or "unknown CPU"


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a broken optional package must not lose a finished measurement's report
        return None


def machine_info() -> dict[str, Any]:
    """The machine and software a measurement ran on, as plain data (JSON-ready)."""
    import torch

    name, isa = _cpuinfo()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "cpu": name or platform.processor() or platform.machine() or "unknown CPU",
        "cores": os.cpu_count(),
        "available_cores": available_cores(),
        "isa": isa,
        "torch_cpu_capability": capability,  # the kernels torch dispatches to: DEFAULT, AVX2, AVX512, ...
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "compressai": _version("compressai"),
        "pillow": _version("PIL"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def isa_summary(isa: list[str]) -> str:
    """The widest vector and matrix extensions in a few words: ``"avx512+vnni+bf16, amx+bf16+int8"``."""
    parts = []
    if "avx512f" in isa:
        parts.append("avx512" + "".join(f"+{x}" for x in ("vnni", "bf16", "fp16") if f"avx512_{x}" in isa))
    elif "avx2" in isa:
        parts.append("avx2")
    if "amx_tile" in isa:
        parts.append("amx" + "".join(f"+{x}" for x in ("bf16", "int8", "fp16") if f"amx_{x}" in isa))
    sve = "sve2" if "sve2" in isa else "sve" if "sve" in isa else None
    if sve or "asimd" in isa:
        parts.append((sve or "neon") + "".join(f"+{x}" for x in ("bf16", "i8mm") if x in isa))
    return ", ".join(parts)


def machine_summary(info: dict[str, Any] | None = None, threads: int | None = None) -> str:
    """One line for a report: ``"Intel Xeon, 2 cores (avx512+vnni+bf16, amx+bf16), torch 2.x, compressai 1.2"``."""
    info = info if info is not None else machine_info()
    isa = isa_summary(list(info.get("isa", [])))
    text = f"{info['cpu']}, {info['cores']} cores" + (f" ({isa})" if isa else "")
    if info.get("cuda"):
        text += f", GPU {info['cuda']}"
    text += f", torch {info['torch']}"
    if info.get("compressai"):
        text += f", compressai {info['compressai']}"
    return text + (f", {threads} threads" if threads else "")
