"""The one table: the CUDA version a host's driver supports -> the framework build to install.

A driver supports every CUDA runtime up to the version `nvidia-smi` reports, so the
right build is the newest one the framework publishes at or below that version. The
document's lesson (S12): `mxnet-cu101` had to be picked by hand to match CUDA 10.1;
here the table picks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpubox.errors import InvalidInput, NotSupported, did_you_mean

FRAMEWORKS = ("pytorch", "tensorflow", "jax", "mxnet")
ALIASES = {"torch": "pytorch", "tf": "tensorflow", "mx": "mxnet"}

# (major, minor, tag), newest first: the first row the driver's CUDA reaches wins.
TORCH_CUDA_BUILDS: tuple[tuple[int, int, str], ...] = (
    (13, 0, "cu130"),
    (12, 8, "cu128"),
    (12, 6, "cu126"),
    (12, 4, "cu124"),
    (12, 1, "cu121"),
    (11, 8, "cu118"),
)
# MXNet stopped at 1.9.1 (2022); its newest GPU build is for CUDA 11.2.
MXNET_CUDA_BUILDS: tuple[tuple[int, int, str], ...] = (
    (11, 2, "cu112"),
    (11, 0, "cu110"),
    (10, 2, "cu102"),
    (10, 1, "cu101"),
    (10, 0, "cu100"),
    (9, 2, "cu92"),
    (9, 0, "cu90"),
)
JAX_CUDA_MAJORS = (12, 13)

_CUDA_IN_SMI = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class InstallPlan:
    """What the bootstrap's `framework` step installs, and where from."""

    framework: str
    tag: str  # "cu124", "cuda12", "cpu" ...: recorded on the host to notice a change
    packages: tuple[str, ...]
    # The framework's own index (torch's CUDA builds), searched before the default one.
    index_url: str | None = None
    # Replaces PyPI as the default index (the `pip_index_url` setting: a mirror).
    default_index_url: str | None = None
    find_links: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def uses_gpu(self) -> bool:
        return self.tag != "cpu"


def parse_cuda_version(nvidia_smi_output: str) -> str | None:
    """The CUDA version in `nvidia-smi`'s banner ("CUDA Version: 12.4") as "12.4", or None."""
    match = _CUDA_IN_SMI.search(nvidia_smi_output or "")
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else None


def normalize_framework(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FRAMEWORKS:
        raise InvalidInput(
            f"unknown framework '{name}'",
            hint=did_you_mean(key, [*FRAMEWORKS, *ALIASES]) or f"choose one of {', '.join(FRAMEWORKS)}",
        )
    return key


def _cuda_tuple(cuda_version: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.\d+)?\s*", cuda_version)
    if not match:
        raise InvalidInput(f"cannot read CUDA version '{cuda_version}'", hint="expected e.g. 12.4")
    return int(match.group(1)), int(match.group(2) or 0)


def _newest_build(builds: tuple[tuple[int, int, str], ...], cuda: tuple[int, int]) -> str | None:
    for major, minor, tag in builds:
        if cuda >= (major, minor):
            return tag
    return None


def cuda_wheel_tag(framework: str, cuda_version: str | None) -> str:
    """The build tag for the driver's CUDA: "cu124" (torch, mxnet), "cuda12" (jax, tf) or "cpu"."""
    framework = normalize_framework(framework)
    if cuda_version is None:
        return "cpu"
    cuda = _cuda_tuple(cuda_version)
    shown = f"{cuda[0]}.{cuda[1]}"
    if framework == "pytorch":
        tag = _newest_build(TORCH_CUDA_BUILDS, cuda)
        if tag is None:
            raise NotSupported(
                f"the driver supports CUDA {shown}; PyTorch's oldest CUDA build needs 11.8",
                hint="update the NVIDIA driver on the host (or use a newer image)",
            )
        return tag
    if framework == "mxnet":
        if cuda[0] >= 12:
            raise NotSupported(
                f"MXNet has no build for CUDA {shown}: its last GPU build is mxnet-cu112 "
                "(CUDA 11.2) and MXNet is retired",
                hint="use --framework pytorch (the book's code is the same in every framework)",
            )
        tag = _newest_build(MXNET_CUDA_BUILDS, cuda)
        if tag is None:
            raise NotSupported(f"MXNet has no build for CUDA {shown}", hint="update the driver")
        return tag
    # jax and tensorflow publish one build per CUDA major.
    if framework == "jax" and cuda[0] not in JAX_CUDA_MAJORS:
        if cuda[0] > max(JAX_CUDA_MAJORS):
            return f"cuda{max(JAX_CUDA_MAJORS)}"
        raise NotSupported(
            f"JAX has no build for CUDA {shown} (it needs CUDA 12 or 13)",
            hint="update the NVIDIA driver on the host, or use --framework pytorch",
        )
    if framework == "tensorflow" and cuda[0] < 12:
        raise NotSupported(
            f"TensorFlow's current GPU build needs CUDA 12; the driver supports {shown}",
            hint="update the NVIDIA driver on the host, or use --framework pytorch",
        )
    return f"cuda{min(cuda[0], 12) if framework == 'tensorflow' else cuda[0]}"


def install_plan(
    framework: str,
    cuda: str | None,
    settings,
    *,
    packages: tuple[str, ...] | None = None,
) -> InstallPlan:
    """The packages (and index) for `framework` on a host whose driver supports `cuda`.

    `packages` (or the `framework_packages` setting) replaces the table's package list,
    e.g. to pin a version or install from a local wheel folder; the index stays.
    """
    framework = normalize_framework(framework)
    tag = cuda_wheel_tag(framework, cuda)
    index_url = None
    notes: list[str] = []
    if framework == "pytorch":
        chosen: tuple[str, ...] = ("torch", "torchvision")
        index_url = f"{settings.torch_index_url.rstrip('/')}/{tag}"
    elif framework == "jax":
        chosen = ("jax",) if tag == "cpu" else (f"jax[{tag}]",)
    elif framework == "tensorflow":
        chosen = ("tensorflow",) if tag == "cpu" else ("tensorflow[and-cuda]",)
    else:
        chosen = ("mxnet",) if tag == "cpu" else (f"mxnet-{tag}",)
        notes.append("MXNet 1.9.1 is the last release and needs Python <= 3.10")
    if cuda is None:
        notes.append("no NVIDIA GPU driver found: installing the CPU build")
    override = packages or _split(getattr(settings, "framework_packages", None))
    if override:
        chosen = override
    return InstallPlan(
        framework=framework,
        tag=tag,
        packages=chosen,
        index_url=index_url,
        default_index_url=settings.pip_index_url,
        find_links=settings.pip_find_links,
        notes=tuple(notes),
    )


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()
