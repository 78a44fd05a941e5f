"""GPU memory, where a GPU exists: NVML (package nvidia-ml-py, the `gpu` extra) if importable, else `nvidia-smi`.
No GPU -> None.

Used to confirm that memory really came back after an engine stops, and that a model fits before it starts. Those
checks follow the GPUs the engine was given (`engine_gpus`): an engine's `gpus: [1]` means the second GPU it can see,
and which physical GPU that is depends on `CUDA_VISIBLE_DEVICES`, read the way CUDA reads it:

- unset: every GPU, in the driver's order (NVML's and `nvidia-smi`'s: PCI bus order);
- set: a comma-separated list of driver indices (`2,3`) or GPU UUIDs (`GPU-8932f937-...`, or a unique beginning of
  one); the list ends at the first entry that is neither, names no GPU, or repeats one (CUDA ignores the rest);
  empty: no GPU.

CUDA itself orders GPUs fastest first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set; on a machine with different GPU
models, give an engine's process `CUDA_DEVICE_ORDER=PCI_BUS_ID` so that it and this module agree (Docker's `--gpus
device=...` always uses the driver's order).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, Union

from .errors import ConfigError

#: What an engine is given: every visible GPU, none, or visible indices / GPU UUIDs (`[0, 1]`, `["GPU-8932..."]`).
GpuSelection = Union[Literal["all", "none"], Sequence[Union[int, str]], None]

_INDEX = re.compile(r"^\d+$")
_UUID = re.compile(r"^GPU-[0-9a-fA-F-]+$")
_MIG = re.compile(r"^MIG-[0-9a-zA-Z/-]+$")


@dataclass(frozen=True)
class GpuMemory:
    index: int
    """The driver's index (NVML, `nvidia-smi`), whatever `CUDA_VISIBLE_DEVICES` says."""
    name: str
    used_mib: int
    total_mib: int
    uuid: str | None = None
    """`GPU-...`; None when it was not asked for (`nvidia-smi` is only asked when a UUID must be matched)."""


def _selection(gpus: GpuSelection) -> Literal["all", "none"] | list[str]:
    """`gpus` as "all", "none" or a list of entries (a string such as "1,2" is a list too)."""
    if gpus is None or gpus == "all":
        return "all"
    if gpus == "none":
        return "none"
    if isinstance(gpus, str):
        return [part.strip() for part in gpus.split(",") if part.strip()]
    return [str(g).strip() for g in gpus]


def gpu_memory() -> list[GpuMemory] | None:
    """Memory of every GPU, in the driver's order, or None when there is no NVIDIA GPU (or no way to ask)."""
    return _query(with_uuid=False)


def engine_gpus(gpus: GpuSelection = "all", *, environ: Mapping[str, str] | None = None) -> list[GpuMemory] | None:
    """Memory of the GPUs an engine was given (its `gpus` setting), in the engine's order, as `CUDA_VISIBLE_DEVICES`
    in `environ` (default: this process's) shows them. `[]` for `"none"`; None when there is no GPU to ask.
    Raises ConfigError when `gpus` names a GPU that is not there."""
    gpus = _selection(gpus)
    if gpus == "none":
        return []
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    wanted = [] if gpus == "all" else gpus
    if any(_MIG.match(entry) for entry in wanted):
        return None  # a MIG instance's memory is not its GPU's: no check can follow it
    entries = [entry.strip() for entry in (visible or "").split(",")] + wanted
    needs_uuid = any(entry and not _INDEX.match(entry) for entry in entries)
    devices = _query(with_uuid=needs_uuid)
    if devices is None:
        return None
    by_index = {device.index: device for device in devices}
    return [by_index[i] for i in physical_indices(gpus, visible, devices)]


def driver_version() -> str | None:
    """The NVIDIA driver's version (`"580.82.07"`), or None when there is no driver to ask. For the run record: a
    driver update is a usual reason for a run to differ from the last (`jarvis compare`)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                return _text(pynvml.nvmlSystemGetDriverVersion())
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # pynvml.NVMLError: no driver; nvidia-smi may still answer
            pass
    out = _nvidia_smi("--query-gpu=driver_version")
    first = out.strip().splitlines()[0].strip() if out and out.strip() else ""
    return first or None


def used_mib(gpus: GpuSelection = "all", *, environ: Mapping[str, str] | None = None) -> int | None:
    """Memory used on the engine's GPUs together (MiB), or None when there is no GPU to ask."""
    selected = engine_gpus(gpus, environ=environ)
    return sum(g.used_mib for g in selected) if selected else None


def wait_for_release(baseline_used_mib: int, *, index: int = 0, gpus: GpuSelection = None,
                     environ: Mapping[str, str] | None = None, slack_mib: int = 512,
                     timeout: float = 30.0) -> bool | None:
    """Poll until used memory is back within `slack_mib` (per GPU) of `baseline_used_mib`. With `gpus` (an engine's
    setting) the memory is that of the engine's GPUs together (take the baseline with `used_mib(gpus)`); without,
    that of the GPU whose driver index is `index`. None when there is no such GPU."""
    deadline = time.monotonic() + timeout
    while True:
        if gpus is None:
            gpu = next((g for g in gpu_memory() or () if g.index == index), None)
            used, count = (gpu.used_mib, 1) if gpu is not None else (None, 0)
        else:
            selected = engine_gpus(gpus, environ=environ)
            used, count = (sum(g.used_mib for g in selected), len(selected)) if selected else (None, 0)
        if used is None:
            return None
        if used <= baseline_used_mib + slack_mib * count:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


# --- the mapping: visible indices and CUDA_VISIBLE_DEVICES to the driver's GPUs ----------------------------------


def parse_visible_devices(value: str | None) -> list[str] | None:
    """The entries of a `CUDA_VISIBLE_DEVICES` value up to the first that is not an index or a GPU/MIG UUID; None
    when it is unset (every GPU is visible)."""
    if value is None:
        return None
    entries = []
    for part in value.split(","):
        part = part.strip()
        if not (_INDEX.match(part) or _UUID.match(part) or _MIG.match(part)):
            break
        entries.append(part)
    return entries


def physical_indices(gpus: GpuSelection, cuda_visible_devices: str | None,
                     devices: Sequence[GpuMemory]) -> list[int]:
    """The driver indices of the GPUs an engine sees, in its order: `gpus` (`"all"`, `"none"`, or visible indices
    and GPU UUIDs) applied to what `cuda_visible_devices` leaves visible of `devices` (every GPU, driver order)."""
    visible = _visible(cuda_visible_devices, devices)
    gpus = _selection(gpus)
    if gpus == "none":
        return []
    if gpus == "all":
        return visible
    chosen: list[int] = []
    for entry in gpus:
        if _INDEX.match(entry):
            position = int(entry)
            if position >= len(visible):
                shown = "all GPUs" if cuda_visible_devices is None else \
                    f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}"
                raise ConfigError(f"gpus: GPU {position} is not there: {len(visible)} GPU"
                                  f"{'' if len(visible) == 1 else 's'} visible ({shown}); GPUs count from 0")
            index = visible[position]
        elif _MIG.match(entry):
            continue  # a MIG instance: its memory is not the GPU's, so no check follows it
        else:
            index = _match_uuid(entry, devices)
            if index is None:
                raise ConfigError(f"gpus: {entry!r} names no GPU of this machine (nvidia-smi -L lists them)")
        if index not in chosen:
            chosen.append(index)
    return chosen


def engine_visible_devices(gpus: GpuSelection, cuda_visible_devices: str | None) -> str | None:
    """The `CUDA_VISIBLE_DEVICES` value (also Docker's `device_ids`, joined by commas) that gives an engine's
    process exactly the GPUs of its `gpus` setting, read against this process's `cuda_visible_devices`; None for
    "every GPU, leave it unset". Needs no driver: `gpus: [1]` under `CUDA_VISIBLE_DEVICES=2,3` gives `3`."""
    visible = parse_visible_devices(cuda_visible_devices)
    gpus = _selection(gpus)
    if gpus == "none":
        return ""
    if gpus == "all":
        return None if visible is None else ",".join(visible)
    chosen: list[str] = []
    for entry in gpus:
        if _INDEX.match(entry) and visible is not None:
            position = int(entry)
            if position >= len(visible):
                raise ConfigError(f"gpus: GPU {position} is not there: {len(visible)} GPU"
                                  f"{'' if len(visible) == 1 else 's'} visible "
                                  f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}); GPUs count from 0")
            entry = visible[position]
        elif _INDEX.match(entry):
            entry = str(int(entry))
        if entry not in chosen:
            chosen.append(entry)
    return ",".join(chosen)


def _visible(cuda_visible_devices: str | None, devices: Sequence[GpuMemory]) -> list[int]:
    entries = parse_visible_devices(cuda_visible_devices)
    indices = [d.index for d in devices]
    if entries is None:
        return indices
    visible: list[int] = []
    for entry in entries:
        if _INDEX.match(entry):
            index = int(entry) if int(entry) in indices else None
        elif _UUID.match(entry):
            index = _match_uuid(entry, devices)
        else:  # a MIG instance: its memory is not the GPU's; no check can follow it
            index = None
        if index is None or index in visible:
            break  # as CUDA does: this entry and every later one are ignored
        visible.append(index)
    return visible


def _match_uuid(entry: str, devices: Sequence[GpuMemory]) -> int | None:
    """The GPU whose UUID is `entry` or begins with it (a unique beginning, as CUDA allows), ignoring case."""
    wanted = entry.lower()
    matches = [d.index for d in devices if d.uuid and d.uuid.lower().startswith(wanted)]
    exact = [d.index for d in devices if d.uuid and d.uuid.lower() == wanted]
    return exact[0] if exact else matches[0] if len(matches) == 1 else None


# --- asking the driver ----------------------------------------------------------------------------------------------


def _query(*, with_uuid: bool) -> list[GpuMemory] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return _from_nvidia_smi(with_uuid)
    gpus = _from_nvml(pynvml)
    return gpus if gpus is not None else _from_nvidia_smi(with_uuid)


def _from_nvml(pynvml) -> list[GpuMemory] | None:  # noqa: ANN001 - the module
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(GpuMemory(i, _text(pynvml.nvmlDeviceGetName(handle)), int(mem.used) // 2**20,
                                 int(mem.total) // 2**20, _text(pynvml.nvmlDeviceGetUUID(handle))))
        return out or None
    except Exception:  # pynvml.NVMLError: a GPU fell off the bus, a driver/library mismatch
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _from_nvidia_smi(with_uuid: bool = False) -> list[GpuMemory] | None:
    out = _nvidia_smi("--query-gpu=index,name,memory.used,memory.total")
    if out is None:
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:  # a GPU that reports "[N/A]" or "[Unknown Error]" is left out
            used, total = int(float(parts[-2])), int(float(parts[-1]))
        except (ValueError, OverflowError):
            continue
        gpus.append(GpuMemory(int(parts[0]), ", ".join(parts[1:-2]), used, total))
    if not gpus:
        return None
    if with_uuid:
        uuids = {}
        for line in (_nvidia_smi("--query-gpu=index,uuid") or "").strip().splitlines():
            index, _, uuid = (p.strip() for p in line.partition(","))
            if index.isdigit() and uuid.startswith(("GPU-", "gpu-")):
                uuids[int(index)] = uuid
        gpus = [GpuMemory(g.index, g.name, g.used_mib, g.total_mib, uuids.get(g.index)) for g in gpus]
    return gpus


def _nvidia_smi(query: str) -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=10, check=True, errors="replace").stdout
    except (OSError, subprocess.SubprocessError):
        return None
