"""Scoring precision: fp32, bf16, or ``auto`` (bf16 where the hardware computes it natively).

The SSL front-end is over 98% of the CPU time of scoring; under
``torch.autocast(dtype=torch.bfloat16)`` its matrix products and convolutions
run in bfloat16 (accumulated in float32), which CPUs with AVX-512 BF16 or AMX
and GPUs from Ampere on execute natively, at about twice the fp32 throughput
or more. Elsewhere bf16 is emulated and slower than fp32, so ``auto`` picks
bf16 only where it is native:

- GPU (``cuda``): ``torch.cuda.is_bf16_supported()``;
- CPU: the ``avx512_bf16`` or ``amx_bf16`` flag of ``/proc/cpuinfo`` (x86,
  Linux), the ``bf16`` feature of an Arm CPU, or, where ``/proc/cpuinfo``
  cannot be read, ``torch.backends.cpu.get_cpu_capability()`` naming AMX or BF16.

Scores computed in bf16 differ from fp32 ones by a small amount (documented
in ``docs/DEPLOYING.md`` with the measured agreement of the decisions); the
waveform normalisation, the masks and the output scores stay in float32.

Authors
 * speechbrain-nes2net contributors
"""

import contextlib
from pathlib import Path

import torch

#: The values of ``--precision`` / ``precision=``.
PRECISIONS = ("fp32", "bf16", "auto")

#: ``/proc/cpuinfo`` flags of a CPU that computes bfloat16 products natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty set where unreadable).

    Arguments
    ---------
    cpuinfo : str or Path
        The file to read (``flags`` on x86, ``Features`` on Arm).

    Returns
    -------
    set of str

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cpuinfo")
    >>> _ = open(path, "w").write("processor : 0\\nflags : fpu sse avx512_bf16\\n")
    >>> sorted(cpu_flags(path))
    ['avx512_bf16', 'fpu', 'sse']
    >>> cpu_flags(path + ".missing")
    set()
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(flags=None):
    """Whether this CPU computes bfloat16 matrix products natively.

    Arguments
    ---------
    flags : set of str, optional
        CPU flags (default: :func:`cpu_flags`); when empty, torch's
        ``get_cpu_capability()`` decides (``AMX`` / ``BF16`` in its name).

    Returns
    -------
    bool

    Example
    -------
    >>> cpu_has_native_bf16({"avx2", "avx512f", "avx512_bf16"})
    True
    >>> cpu_has_native_bf16({"avx2", "avx512f", "avx512_vnni"})
    False
    """
    flags = cpu_flags() if flags is None else set(flags)
    if flags:
        return any(flag in flags for flag in BF16_CPU_FLAGS)
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AMX" in capability or "BF16" in capability


def device_type(device):
    """The device type ('cpu', 'cuda', 'mps') of a device string or ``torch.device``.

    Example
    -------
    >>> device_type("cuda:1"), device_type(torch.device("cpu"))
    ('cuda', 'cpu')
    """
    return torch.device(device).type


def resolve_precision(precision, device="cpu", flags=None):
    """Maps ``fp32`` / ``bf16`` / ``auto`` to the precision to run in.

    Arguments
    ---------
    precision : str
        One of :data:`PRECISIONS` (None means fp32).
    device : str or torch.device
        Where the model runs.
    flags : set of str, optional
        CPU flags for ``auto`` (default: read from ``/proc/cpuinfo``).

    Returns
    -------
    str
        'fp32' or 'bf16'.

    Raises
    ------
    ValueError
        For another value.

    Example
    -------
    >>> resolve_precision("auto", "cpu", flags={"avx512f", "avx512_bf16"})
    'bf16'
    >>> resolve_precision("auto", "cpu", flags={"avx2"})
    'fp32'
    >>> resolve_precision("bf16"), resolve_precision(None)
    ('bf16', 'fp32')
    """
    if precision is None:
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not one of {', '.join(PRECISIONS)} (fp16 is not "
            "offered: bf16 keeps fp32's range, which SSL activations need)"
        )
    if precision != "auto":
        return precision
    kind = device_type(device)
    if kind == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_has_native_bf16(flags) else "fp32"
    return "fp32"


def autocast(precision, device="cpu"):
    """The context to run a forward pass in at ``precision`` ('fp32' or 'bf16').

    fp32 is a no-op; bf16 is ``torch.autocast(device type, dtype=torch.bfloat16)``,
    under which matrix products and convolutions run in bfloat16 and the
    rest (normalisations, masks, reductions) in float32.

    Example
    -------
    >>> with autocast("bf16"):
    ...     (torch.ones(2, 3) @ torch.ones(3, 2)).dtype
    torch.bfloat16
    >>> with autocast("fp32"):
    ...     (torch.ones(2, 3) @ torch.ones(3, 2)).dtype
    torch.float32
    """
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type(device), dtype=torch.bfloat16)
