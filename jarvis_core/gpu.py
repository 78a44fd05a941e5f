"""GPU memory, where a GPU exists: NVML (package nvidia-ml-py) if importable, else `nvidia-smi`. No GPU -> None.

Used to confirm that memory really came back after an engine stops (engines.md §5.3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    used_mib: int
    total_mib: int


def gpu_memory() -> list[GpuMemory] | None:
    """Memory of each GPU, or None when there is no NVIDIA GPU (or no way to ask)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return _from_nvidia_smi()
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver
        return _from_nvidia_smi()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            out.append(GpuMemory(i, name.decode() if isinstance(name, bytes) else name,
                                 mem.used // 2**20, mem.total // 2**20))
        return out
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[GpuMemory] | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            gpus.append(GpuMemory(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3]))))
    return gpus or None


def wait_for_release(baseline_used_mib: int, *, index: int = 0, slack_mib: int = 512,
                     timeout: float = 30.0) -> bool | None:
    """Poll until GPU `index`'s used memory is back within `slack_mib` of `baseline_used_mib`.
    None when there is no such GPU."""
    deadline = time.monotonic() + timeout
    while True:
        gpu = next((g for g in gpu_memory() or () if g.index == index), None)
        if gpu is None:
            return None
        if gpu.used_mib <= baseline_used_mib + slack_mib:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
