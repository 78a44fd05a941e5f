"""GPU memory checks follow the GPUs an engine was given, in the order CUDA_VISIBLE_DEVICES means: with a faked NVML
(the `gpu` extra, nvidia-ml-py) and a faked nvidia-smi, since no GPU is needed to test the mapping."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from jarvis_core import gpu
from jarvis_core.errors import ConfigError
from jarvis_core.gpu import (GpuMemory, engine_gpus, engine_visible_devices, gpu_memory, parse_visible_devices,
                             physical_indices, used_mib, wait_for_release)

UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000",
         "GPU-cccc3333-0000-0000-0000-000000000000", "GPU-ccdd4444-0000-0000-0000-000000000000"]
DEVICES = [GpuMemory(i, f"GPU {i}", 1000 * (i + 1), 80_000, UUIDS[i]) for i in range(4)]


# --- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, entries", [
    (None, None), ("", []), ("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]), ("1,-1,2", ["1"]), ("x", []),
    ("GPU-aaaa,1", ["GPU-aaaa", "1"]), ("MIG-GPU-aaaa/1/0,0", ["MIG-GPU-aaaa/1/0", "0"]), ("0,,1", ["0"]),
])
def test_cuda_visible_devices_is_read_up_to_its_first_invalid_entry(value, entries):
    assert parse_visible_devices(value) == entries


@pytest.mark.parametrize("gpus, visible, physical", [
    ("all", None, [0, 1, 2, 3]),
    (None, None, [0, 1, 2, 3]),
    ("none", "0,1", []),
    ([1], None, [1]),
    (["1"], None, [1]),
    ([1], "2,3", [3]),
    ([0, 1], "3,1", [3, 1]),
    ("all", "3,1", [3, 1]),
    ("all", "", []),
    ("all", "1,7,2", [1]),           # GPU 7 does not exist: it and what follows are ignored, as CUDA does
    ("all", "1,1,2", [1]),           # a repeated GPU ends the list too
    ("all", "GPU-bbbb2222,0", [1, 0]),
    ("all", "GPU-CCCC3333", [2]),    # UUID digits ignore case
    ("all", "0,GPU-cc", [0]),        # an ambiguous UUID beginning ends the list
    ("all", "GPU-ccdd", [3]),        # a unique one selects
    ("all", "MIG-GPU-aaaa/1/0,1", []),
    ([UUIDS[2]], "0,1", [2]),        # a UUID in `gpus` names a physical GPU directly
    (["GPU-bbbb"], None, [1]),
    ([0, "0"], None, [0]),
])
def test_visible_indices_map_to_the_drivers_gpus(gpus, visible, physical):
    assert physical_indices(gpus, visible, DEVICES) == physical


@pytest.mark.parametrize("gpus, visible, fragment", [
    ([2], "0,1", "gpus: GPU 2 is not there: 2 GPUs visible (CUDA_VISIBLE_DEVICES='0,1'); GPUs count from 0"),
    ([0], "", "gpus: GPU 0 is not there: 0 GPUs visible"),
    ([4], None, "gpus: GPU 4 is not there: 4 GPUs visible (all GPUs)"),
    (["GPU-ffff"], None, "gpus: 'GPU-ffff' names no GPU of this machine"),
])
def test_a_gpu_that_is_not_there_is_a_config_error(gpus, visible, fragment):
    with pytest.raises(ConfigError, match=None) as caught:
        physical_indices(gpus, visible, DEVICES)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("gpus, visible, value", [
    ("all", None, None), ("all", "2,3", "2,3"), ("all", "2,x,3", "2"), ("none", None, ""), ("none", "1", ""),
    ([1], None, "1"), (["01"], None, "1"), ([1], "2,3", "3"), ([1, 0], "2,3", "3,2"), ([0], "GPU-aaaa,1", "GPU-aaaa"),
    ([UUIDS[1]], "0", UUIDS[1]), (["MIG-GPU-a/1/0"], None, "MIG-GPU-a/1/0"),
])
def test_the_engines_cuda_visible_devices_needs_no_driver(gpus, visible, value):
    assert engine_visible_devices(gpus, visible) == value


def test_the_engines_cuda_visible_devices_refuses_an_index_past_the_list():
    with pytest.raises(ConfigError, match=r"GPU 2 is not there: 2 GPUs visible \(CUDA_VISIBLE_DEVICES='4,5'\)"):
        engine_visible_devices([2], "4,5")


# --- NVML (nvidia-ml-py) ------------------------------------------------------------------------------------------


class FakeNvml(types.ModuleType):
    """pynvml as far as gpu.py uses it; names come as bytes, as older releases return them."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices=DEVICES, fail_init=False, fail_query=False):
        super().__init__("pynvml")
        self.devices, self.fail_init, self.fail_query, self.shutdowns = devices, fail_init, fail_query, 0

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        if self.fail_query:
            raise self.NVMLError("GPU is lost")
        return self.devices[i]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=handle.used_mib * 2**20, total=handle.total_mib * 2**20, free=0)

    def nvmlDeviceGetName(self, handle):
        return handle.name.encode()

    def nvmlDeviceGetUUID(self, handle):
        return handle.uuid


@pytest.fixture
def no_smi(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)


def test_nvml_reports_every_gpu_with_its_uuid(monkeypatch, no_smi):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu_memory() == DEVICES
    assert fake.shutdowns == 1


def test_engine_gpus_follow_cuda_visible_devices_through_nvml(monkeypatch, no_smi):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    environ = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert [g.index for g in engine_gpus([1], environ=environ)] == [3]
    assert [g.index for g in engine_gpus("all", environ=environ)] == [2, 3]
    assert engine_gpus("none", environ=environ) == []
    assert [g.index for g in engine_gpus([0], environ={"CUDA_VISIBLE_DEVICES": "GPU-bbbb"})] == [1]
    assert used_mib([0, 1], environ=environ) == 3000 + 4000
    assert used_mib("none", environ=environ) is None


def test_the_process_environment_is_read_when_none_is_given(monkeypatch, no_smi):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,0")
    assert [g.index for g in engine_gpus()] == [3, 0]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [g.index for g in engine_gpus()] == [0, 1, 2, 3]


def test_a_mig_selection_is_not_checked(monkeypatch, no_smi):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    assert engine_gpus(["MIG-GPU-aaaa/1/0"], environ={}) is None


@pytest.mark.parametrize("fake", [FakeNvml(fail_init=True), FakeNvml(fail_query=True), FakeNvml(devices=[])])
def test_an_nvml_that_fails_falls_back_to_nvidia_smi(monkeypatch, fake, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    fake_smi(monkeypatch, tmp_path)
    assert [g.name for g in gpu_memory()] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]


# --- nvidia-smi -----------------------------------------------------------------------------------------------------

SMI = '''#!{python}
import sys
with open({log!r}, "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if "--query-gpu=index,name,memory.used,memory.total" in sys.argv:
    print("0, NVIDIA H100 80GB HBM3, 70000, 81559")
    print("1, NVIDIA L4, 600, 23034")
    print("2, NVIDIA A100, [N/A], [N/A]")
elif "--query-gpu=index,uuid" in sys.argv:
    print("0, GPU-11111111-aaaa-bbbb-cccc-000000000000")
    print("1, GPU-22222222-aaaa-bbbb-cccc-000000000000")
    print("2, GPU-33333333-aaaa-bbbb-cccc-000000000000")
else:
    sys.exit("unexpected arguments")
'''


def fake_smi(monkeypatch, tmp_path: Path) -> Path:
    log = tmp_path / "smi.log"
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir(exist_ok=True)
    smi.write_text(SMI.format(python=sys.executable, log=str(log)))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


@pytest.fixture
def smi(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    return fake_smi(monkeypatch, tmp_path)


def test_nvidia_smi_is_asked_as_before_and_unreadable_gpus_are_left_out(smi):
    gpus = gpu_memory()
    assert gpus == [GpuMemory(0, "NVIDIA H100 80GB HBM3", 70000, 81559), GpuMemory(1, "NVIDIA L4", 600, 23034)]
    assert smi.read_text().splitlines() == ["--query-gpu=index,name,memory.used,memory.total "
                                            "--format=csv,noheader,nounits"]


def test_indices_need_no_uuid_query(smi):
    assert [g.index for g in engine_gpus([1], environ={"CUDA_VISIBLE_DEVICES": "1,0"})] == [0]
    assert len(smi.read_text().splitlines()) == 1


def test_uuids_are_asked_for_only_when_one_must_be_matched(smi):
    environ = {"CUDA_VISIBLE_DEVICES": "GPU-22222222,0"}
    selected = engine_gpus("all", environ=environ)
    assert [(g.index, g.uuid) for g in selected] == [(1, "GPU-22222222-aaaa-bbbb-cccc-000000000000"),
                                                     (0, "GPU-11111111-aaaa-bbbb-cccc-000000000000")]
    assert any("--query-gpu=index,uuid" in line for line in smi.read_text().splitlines())


def test_a_gpu_past_the_visible_ones_is_a_config_error(smi):
    with pytest.raises(ConfigError, match="GPU 1 is not there: 1 GPU visible"):
        engine_gpus([1], environ={"CUDA_VISIBLE_DEVICES": "0"})


def test_no_gpu_at_all_is_none(monkeypatch, no_smi):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu_memory() is None and engine_gpus([0], environ={}) is None and used_mib() is None
    assert wait_for_release(0, gpus=[0], timeout=0) is None


# --- waiting for memory to come back ------------------------------------------------------------------------------


def test_wait_for_release_follows_the_engines_gpus(monkeypatch):
    readings = iter([[GpuMemory(0, "a", 100, 1000), GpuMemory(1, "b", 9000, 10000)],
                     [GpuMemory(0, "a", 100, 1000), GpuMemory(1, "b", 600, 10000)]])
    monkeypatch.setattr(gpu, "_query", lambda with_uuid: next(readings))
    monkeypatch.setattr(gpu.time, "sleep", lambda s: None)
    assert wait_for_release(500, gpus=[0], environ={"CUDA_VISIBLE_DEVICES": "1"}, slack_mib=100, timeout=5) is True


def test_wait_for_release_times_out_on_the_engines_gpu(monkeypatch):
    monkeypatch.setattr(gpu, "_query", lambda with_uuid: [GpuMemory(0, "a", 100, 1000), GpuMemory(1, "b", 9000,
                                                                                                   10000)])
    assert wait_for_release(100, gpus=[1], environ={}, timeout=0) is False
    assert wait_for_release(100, gpus=[0], environ={}, timeout=0) is True
    assert wait_for_release(100, index=0, timeout=0) is True  # the earlier call, by driver index, still works


def test_a_selection_written_as_one_string_is_a_list():
    assert physical_indices("1,0", None, DEVICES) == [1, 0]
    assert engine_visible_devices("1", "2,3") == "3"
