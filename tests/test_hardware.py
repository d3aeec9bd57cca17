"""What the machine offers (hardware.py): its usable cores, whether TensorFlow sees a GPU, and the
precision that fits it: detection from CPU flags and GPU compute capability (mocked), the refusal,
the forced warning, and the silent cases; the CPU checks do not import TensorFlow."""
import os
import subprocess
import sys

import pytest

from gradual_rnn import hardware
from gradual_rnn.configs import ConfigError


# /proc/cpuinfo flags of the two AMD EPYC kinds the speed issue was measured on.
ZEN3_AVX2 = {"fpu", "sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
ZEN4_AVX512 = ZEN3_AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4_AVX512 | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}

ZEN3_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: {flags}

processor\t: 1
model name\t: another CPU that must not be read
flags\t\t: avx512_bf16
"""


@pytest.fixture
def zen3_cpuinfo(tmp_path, monkeypatch):
    """/proc/cpuinfo of an AVX2-only Zen 3, read through the module's reader; no GPU."""
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN3_CPUINFO.format(flags=" ".join(sorted(ZEN3_AVX2))))
    monkeypatch.setattr(hardware, "CPUINFO", str(path))
    monkeypatch.setattr(hardware, "visible_gpus", lambda: [])
    return path


def test_reader_takes_the_first_processor(zen3_cpuinfo):
    info = hardware.read_cpuinfo()
    assert info.model == "AMD EPYC 7B13 64-Core Processor (family 25, model 1)"
    assert info.flags == frozenset(ZEN3_AVX2)
    assert hardware.vector_extensions(info.flags) == ["avx", "avx2", "f16c", "fma"]


def test_reader_without_x86_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n")
    assert hardware.read_cpuinfo(str(path)).flags is None
    assert hardware.read_cpuinfo(str(tmp_path / "missing")) == hardware.CpuInfo("unknown CPU", None)


def test_bf16_refused_on_avx2_cpu(zen3_cpuinfo):
    with pytest.raises(ConfigError) as raised:
        hardware.check_precision("mixed_bfloat16", force=False)
    message = str(raised.value)
    assert "\n" not in message
    for expected in ("--use_bf16", "mixed_bfloat16", "AMD EPYC 7B13", "avx512_bf16", "amx_bf16",
                     "3-11x slower", "--force_precision"):
        assert expected in message


def test_bf16_forced_on_avx2_cpu_warns(zen3_cpuinfo):
    warning = hardware.check_precision("mixed_bfloat16", force=True)
    assert warning is not None and "\n" not in warning
    for expected in ("mixed_bfloat16", "AMD EPYC 7B13", "avx512_bf16", "3-11x slower", "--force_precision"):
        assert expected in warning


@pytest.mark.parametrize("flags", [ZEN4_AVX512, SAPPHIRE_RAPIDS, ZEN3_AVX2 | {"amx_tile", "amx_bf16"}])
def test_bf16_native(flags):
    assert hardware.check_precision("mixed_bfloat16", force=False, cpu_flags=flags, gpus=[]) is None
    support = hardware.hardware_support("mixed_bfloat16", cpu_flags=flags, gpus=[], cpu_model="X")
    assert support == hardware.Support(True, "CPU X", support.reason)


@pytest.mark.parametrize("flags", [ZEN3_AVX2, ZEN4_AVX512])
def test_fp16_refused_without_avx512_fp16(flags):
    with pytest.raises(ConfigError, match=r"--use_fp16 .*avx512_fp16.*--force_precision"):
        hardware.check_precision("mixed_float16", force=False, cpu_flags=flags, gpus=[], cpu_model="X")


def test_fp16_native_with_avx512_fp16():
    assert hardware.check_precision("mixed_float16", False, cpu_flags=SAPPHIRE_RAPIDS, gpus=[]) is None


@pytest.mark.parametrize("force", [False, True])
def test_float32_inspects_nothing(force, monkeypatch):
    def fail(*_):
        raise AssertionError("float32 must not inspect the hardware")

    monkeypatch.setattr(hardware, "read_cpuinfo", fail)
    monkeypatch.setattr(hardware, "visible_gpus", fail)
    assert hardware.check_precision("float32", force) is None
    assert hardware.hardware_support("float32").native


def test_unknown_precision():
    with pytest.raises(ConfigError, match="float64"):
        hardware.check_precision("float64", force=True, cpu_flags=set(), gpus=[])


@pytest.mark.parametrize("precision_name, capability, native", [
    ("mixed_bfloat16", (7, 5), False), ("mixed_bfloat16", (8, 0), True),
    ("mixed_float16", (6, 1), False), ("mixed_float16", (7, 0), True)])
def test_gpu_compute_capability_decides(precision_name, capability, native):
    gpus = [{"device_name": "Some GPU", "compute_capability": capability}]
    support = hardware.hardware_support(precision_name, cpu_flags=set(), gpus=gpus)
    assert support.native is native and "Some GPU" in support.device
    assert hardware.hardware_support(precision_name, cpu_flags=ZEN3_AVX2, gpus=gpus).native is native


def test_slowest_gpu_decides():
    gpus = [{"device_name": "A100", "compute_capability": (8, 0)},
            {"device_name": "T4", "compute_capability": (7, 5)}]
    with pytest.raises(ConfigError, match=r"T4 \(compute capability 7\.5\).*>= 8\.0"):
        hardware.check_precision("mixed_bfloat16", force=False, cpu_flags=SAPPHIRE_RAPIDS, gpus=gpus)


@pytest.mark.parametrize("gpus, flags", [([{"device_name": "ROCm GPU"}], None), ([], None)])
def test_unknown_support_warns_instead_of_refusing(gpus, flags, monkeypatch):
    monkeypatch.setattr(hardware, "read_cpuinfo", lambda: hardware.CpuInfo("Some ARM CPU", None))
    warning = hardware.check_precision("mixed_bfloat16", force=False, cpu_flags=flags, gpus=gpus)
    assert warning is not None and "unknown" in warning


# --- Cores and GPUs. ---

def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert hardware.usable_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert hardware.usable_cores() == 3
    # Where the OS has no affinity mask: the CPU count, or 1 when that is unknown.
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert hardware.usable_cores() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert hardware.usable_cores() == 1


def test_gpu_available_matches_tensorflow():
    import tensorflow as tf  # here only: the other tests of this file need no TensorFlow

    assert hardware.gpu_available() == bool(tf.config.list_physical_devices("GPU"))


def test_cpu_checks_do_not_import_tensorflow():
    """In a fresh interpreter (this one may have TensorFlow loaded by other tests)."""
    script = ("import sys\n"
              "from gradual_rnn.configs import ConfigError\n"
              "from gradual_rnn import hardware\n"
              "try:\n"
              f"    hardware.check_precision('mixed_bfloat16', False, cpu_flags={sorted(ZEN3_AVX2)!r}, gpus=[])\n"
              "except ConfigError:\n"
              "    pass\n"
              "else:\n"
              "    sys.exit('not refused')\n"
              "assert hardware.usable_cores() >= 1\n"
              "sys.exit('tensorflow imported' if 'tensorflow' in sys.modules else 0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]