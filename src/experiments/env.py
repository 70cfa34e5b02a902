"""``python run.py mode=env``: what this machine can run, and what to do next.

Versions, the CUDA build of torch against the GPUs present (compute capability vs
``torch.cuda.get_arch_list()``), Apple MPS, CPU threads, and a plain-language verdict. Offline:
it asks only the local torch and, when present, ``nvidia-smi``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

PACKAGES = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "hydra-core")


@dataclass
class Gpu:
    name: str
    capability: tuple[int, int]
    supported: bool  # this torch build has kernels (or PTX) that run on it

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass
class Environment:
    versions: dict[str, str]
    python: str
    torch_cuda: str | None  # the CUDA version torch was built with; None for a CPU-only build
    cuda_available: bool
    arch_list: list[str]
    gpus: list[Gpu]
    nvidia_smi: list[str]  # GPUs the driver reports (also when torch cannot use them)
    mps_available: bool
    cpu_threads: int
    cpu_count: int
    bf16: bool
    notes: list[str] = field(default_factory=list)


def arch_supports(arch_list: list[str], capability: tuple[int, int]) -> bool:
    """Whether a build compiled for ``arch_list`` runs on a GPU of ``capability``.

    A cubin ``sm_XY`` runs on the same major version with an equal or higher minor; PTX
    (``compute_XY``) is compiled on the fly for any capability at or above it.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a / sm_100f: arch-specific variants of the same number
        if not digits.isdigit():
            continue
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def _nvidia_smi() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def inspect_environment() -> Environment:
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["torch"] = torch.__version__  # with its build tag, e.g. 2.5.1+cu124 or 2.5.1+cpu
    cuda_available = torch.cuda.is_available()
    arch_list = list(torch.cuda.get_arch_list()) if cuda_available else []
    gpus = []
    for index in range(torch.cuda.device_count() if cuda_available else 0):
        capability = tuple(torch.cuda.get_device_capability(index))
        gpus.append(Gpu(torch.cuda.get_device_name(index), capability, arch_supports(arch_list, capability)))
    mps = getattr(torch.backends, "mps", None)
    return Environment(
        versions=versions,
        python=platform.python_version(),
        torch_cuda=torch.version.cuda,
        cuda_available=cuda_available,
        arch_list=arch_list,
        gpus=gpus,
        nvidia_smi=_nvidia_smi(),
        mps_available=bool(mps and mps.is_available()),
        cpu_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count() or 1,
        bf16=bool(cuda_available and torch.cuda.is_bf16_supported()),
    )


def verdict(env: Environment) -> str:
    """One plain-language conclusion with the next step."""
    unsupported = [g for g in env.gpus if not g.supported]
    if unsupported:
        names = ", ".join(f"{g.name} ({g.sm})" for g in unsupported)
        return (
            f"this torch build (CUDA {env.torch_cuda}, arch {' '.join(env.arch_list)}) has no kernels for {names}: "
            "install a torch build whose arch list covers it (usually a newer CUDA build), "
            "or run on CPU with trainer=cpu"
        )
    if env.gpus:
        precision = "trainer.precision=bf16-mixed" if env.bf16 else "trainer.precision=16-mixed"
        return (
            f"ready for GPU: {len(env.gpus)} usable GPU(s); train with trainer=gpu "
            f"(add {precision} for speed{', trainer=ddp for all GPUs' if len(env.gpus) > 1 else ''})"
        )
    if env.nvidia_smi and env.torch_cuda is None:
        return (
            "CPU-only torch build, but the driver reports an NVIDIA GPU: install a CUDA build of torch "
            "to use it (until then runs use the CPU)"
        )
    if env.nvidia_smi:
        return (
            f"torch is built for CUDA {env.torch_cuda} and the driver reports a GPU, but CUDA is not usable: "
            "the driver is probably older than that CUDA version; update the driver or install a torch "
            "build for an older CUDA"
        )
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env.torch_cuda is not None and hidden is not None:
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides the GPUs from torch: runs use the CPU; unset it to use them"
    if env.torch_cuda is not None:
        return (
            f"no NVIDIA GPU here (no nvidia-smi): runs use the CPU, which suits the defaults (digits, "
            f"small_cnn); this CUDA {env.torch_cuda} build of torch uses a GPU where one is installed"
        )
    if env.mps_available:
        return "Apple GPU available: train with trainer.accelerator=mps"
    return (
        f"CPU only ({env.cpu_threads} torch threads): the defaults (digits, small_cnn) train in seconds; "
        "for large models use a machine with an NVIDIA GPU and a CUDA build of torch"
    )


def format_report(env: Environment) -> str:
    lines = ["environment", f"  python          {env.python}"]
    lines += [f"  {name:<15} {version}" for name, version in env.versions.items()]
    lines += [
        f"  torch CUDA      {env.torch_cuda or 'none (CPU-only build)'}",
        f"  CUDA available  {env.cuda_available}",
    ]
    if env.arch_list:
        lines.append(f"  arch list       {' '.join(env.arch_list)}")
    for index, gpu in enumerate(env.gpus):
        support = "supported by this build" if gpu.supported else "NOT supported by this build"
        lines.append(f"  GPU {index}           {gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]} ({gpu.sm}): {support}")
    if env.gpus:
        lines.append(f"  bf16            {env.bf16}")
    for line in env.nvidia_smi if not env.gpus else []:
        lines.append(f"  nvidia-smi      {line}")
    lines += [
        f"  MPS available   {env.mps_available}",
        f"  CPU threads     {env.cpu_threads} torch threads, {env.cpu_count} logical CPUs",
        "",
        f"verdict: {verdict(env)}",
    ]
    return "\n".join(lines)
