"""What this machine offers the package: its CPU cores and GPUs, and whether it computes a mixed
precision's matrix products natively (and what to say if not). The one module that probes hardware.

`mixed_bfloat16` and `mixed_float16` (`configs.PRECISIONS`) run the matrix products in 16 bits.
TensorFlow accepts them on any x86 CPU, but only some CPUs have the instructions:

  * bfloat16: AVX512_BF16 (Intel Cooper Lake and later, AMD Zen 4 and later) or AMX (Intel
    Sapphire Rapids and later); the CPU flags `avx512_bf16`, `amx_bf16`, `amx_tile`.
  * float16: AVX512_FP16 (Intel Sapphire Rapids and later) or AMX-FP16; the flags `avx512_fp16`,
    `amx_fp16`.

Without them the 16-bit products are emulated: a training step ran 3-11x slower in bfloat16 than in
float32 on an AVX2-only AMD EPYC (Zen 3), and 2-4x slower in float16 on an AMD EPYC Zen 4 (AVX-512
and AVX512_BF16 but no AVX512_FP16). On a GPU, bfloat16 needs compute capability 8.0 (Ampere) and
float16 tensor cores need 7.0 (Volta).

Reading /proc/cpuinfo needs no TensorFlow; TensorFlow is imported only to list GPUs, and only when the
caller does not pass the list and the precision is not float32.
"""
import dataclasses
import os
from typing import Iterable, List, Mapping, Optional, Tuple

from gradual_rnn.configs import PRECISIONS, ConfigError

CPUINFO = "/proc/cpuinfo"

# The x86 flags a benchmark reports: what decides the speed of GEMMs and of 16-bit products.
VECTOR_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The first processor of /proc/cpuinfo: its model and, on x86, its flags (None if unknown)."""

    model: str
    flags: Optional[frozenset]


@dataclasses.dataclass(frozen=True)
class Support:
    """native: the device computes the precision's products in hardware. device: the device that
    decides (a CPU model, or a GPU's name and compute capability). reason: one sentence.
    known: False when the device could not be inspected (then `native` is False but unsure)."""

    native: bool
    device: str
    reason: str
    known: bool = True


@dataclasses.dataclass(frozen=True)
class _Need:
    """What one 16-bit precision needs, and what it costs without it."""

    kind: str
    flag: str
    cpu_flags: Tuple[str, ...]
    compute_capability: Tuple[int, int]
    cpu_slowdown: str
    gpu_slowdown: str


_NEEDS = {
    "mixed_bfloat16": _Need(
        "bfloat16", "--use_bf16", ("avx512_bf16", "amx_bf16", "amx_tile"), (8, 0),
        "3-11x slower than float32 (measured on an AVX2-only AMD EPYC Zen 3: small 1,301 vs 4,029 "
        "words/s, large 24 vs 263)",
        "slower than float32 (no bfloat16 units below compute capability 8.0)"),
    "mixed_float16": _Need(
        "float16", "--use_fp16", ("avx512_fp16", "amx_fp16"), (7, 0),
        "2-4x slower than float32 (measured on an AMD EPYC Zen 4 without AVX512_FP16: small 3,200 vs "
        "6,400 words/s, medium 714 vs 2,782)",
        "no faster, often slower, than float32 (no float16 tensor cores below compute capability 7.0)"),
}


def read_cpuinfo(path: Optional[str] = None) -> CpuInfo:
    """The model name (with family and model numbers, which tell AMD Zen generations apart when a
    virtual machine shows only "AMD EPYC") and the flags of the first processor in `path`.
    `path` defaults to /proc/cpuinfo. flags is None when the file is missing or has no x86 `flags`
    line (e.g. on ARM or macOS)."""
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return CpuInfo("unknown CPU", None)
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        name, separator, value = line.partition(":")
        if separator:
            fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name") or fields.get("Hardware") or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        model = f"{model} (family {fields['cpu family']}, model {fields['model']})"
    flags = frozenset(fields["flags"].split()) if "flags" in fields else None
    return CpuInfo(model, flags)


def vector_extensions(flags: Optional[Iterable[str]]) -> List[str]:
    """The sorted flags among `flags` that name vector or matrix extensions (avx2, avx512*, amx*...)."""
    return sorted(flag for flag in flags or () if flag.startswith(VECTOR_FLAG_PREFIXES))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU (where `rnn_mode='auto'` picks the cuDNN-eligible path)."""
    import tensorflow as tf  # here only: the CPU checks must not pay TensorFlow's import

    return bool(tf.config.list_logical_devices("GPU"))


def visible_gpus() -> List[Mapping]:
    """`tf.config.experimental.get_device_details` of every GPU TensorFlow sees, with its `name`."""
    import tensorflow as tf  # here only: the CPU check must not pay TensorFlow's import

    return [dict(tf.config.experimental.get_device_details(gpu), name=gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def _need(precision: str) -> Optional[_Need]:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    return _NEEDS.get(precision)


def _gpu_support(need: _Need, gpus: List[Mapping]) -> Support:
    """The slowest GPU decides: a step on several GPUs waits for all of them."""
    for gpu in gpus:
        name = gpu.get("device_name") or gpu.get("name") or "GPU"
        capability = gpu.get("compute_capability")
        if capability is None:
            return Support(False, f"GPU {name}", f"TensorFlow reports no compute capability for {name}, "
                           f"so native {need.kind} support is unknown.", known=False)
        if tuple(capability) < need.compute_capability:
            major, minor = capability
            wanted = ".".join(map(str, need.compute_capability))
            return Support(False, f"GPU {name} (compute capability {major}.{minor})",
                           f"{need.kind} needs compute capability >= {wanted}; expect it "
                           f"{need.gpu_slowdown}.")
    names = ", ".join(f"{gpu.get('device_name') or gpu.get('name')} (compute capability "
                      f"{'.'.join(map(str, gpu['compute_capability']))})" for gpu in gpus)
    return Support(True, f"GPU {names}", f"every visible GPU computes {need.kind} natively.")


def _cpu_support(need: _Need, flags: Optional[Iterable[str]], model: str) -> Support:
    if flags is None:
        return Support(False, f"CPU {model}", f"cannot read x86 CPU flags from {CPUINFO}, so native "
                       f"{need.kind} support is unknown; without it expect {need.cpu_slowdown}.",
                       known=False)
    present = sorted(set(need.cpu_flags) & set(flags))
    if present:
        return Support(True, f"CPU {model}", f"the CPU has {', '.join(present)}.")
    return Support(False, f"CPU {model}", f"the CPU has none of the flags {', '.join(need.cpu_flags)}, "
                   f"so TensorFlow emulates {need.kind}: expect training {need.cpu_slowdown}.")


def hardware_support(precision: str, cpu_flags: Optional[Iterable[str]] = None,
                     gpus: Optional[List[Mapping]] = None, cpu_model: Optional[str] = None) -> Support:
    """Whether the device that runs the products computes `precision` natively.

    With a visible GPU the GPUs decide (by compute capability), else the CPU (by its flags).
    cpu_flags, cpu_model: the CPU's flags and name (default: read from /proc/cpuinfo).
    gpus: `get_device_details`-style dicts (`compute_capability`, `device_name`); default: the GPUs
    TensorFlow sees (imports TensorFlow). float32 is native everywhere and inspects nothing.
    """
    need = _need(precision)
    if need is None:
        return Support(True, "any", "float32 is computed natively by every CPU and GPU.")
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return _gpu_support(need, gpus)
    if cpu_flags is None:
        info = read_cpuinfo()
        cpu_flags, cpu_model = info.flags, cpu_model or info.model
    return _cpu_support(need, cpu_flags, cpu_model or "unknown CPU")


def check_precision(precision: str, force: bool, cpu_flags: Optional[Iterable[str]] = None,
                    gpus: Optional[List[Mapping]] = None, cpu_model: Optional[str] = None) -> Optional[str]:
    """None when `precision` is float32 or native here; a warning to log when it is not native but
    `force` is set (or support cannot be told); otherwise raises ConfigError with a one-line message
    naming the precision, the device, what it lacks, the expected slowdown and `--force_precision`.
    cpu_flags, gpus, cpu_model: as in `hardware_support` (for tests)."""
    need = _need(precision)
    if need is None:
        return None
    support = hardware_support(precision, cpu_flags, gpus, cpu_model)
    if support.native:
        return None
    asked = f"{need.flag} (precision={precision})"
    if not support.known:
        return f"{asked} on {support.device}: {support.reason}"
    if force:
        return f"{asked} on {support.device}: {support.reason} Running anyway, as --force_precision asks."
    raise ConfigError(f"{asked} refused on {support.device}: {support.reason} Train in float32, or "
                      f"pass --force_precision to run anyway.")
