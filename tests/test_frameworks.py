"""The CUDA -> framework build table (gpubox.frameworks)."""

from __future__ import annotations

import pytest

from gpubox import frameworks
from gpubox.errors import InvalidInput, NotSupported

SMI_BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


@pytest.mark.parametrize(
    ("cuda", "tag"),
    [
        ("13.0", "cu130"),
        ("12.9", "cu128"),
        ("12.8", "cu128"),
        ("12.7", "cu126"),
        ("12.6", "cu126"),
        ("12.5", "cu124"),
        ("12.4", "cu124"),
        ("12.2", "cu121"),
        ("12.1", "cu121"),
        ("12.0", "cu118"),
        ("11.8", "cu118"),
        (None, "cpu"),
    ],
)
def test_torch_takes_the_newest_build_the_driver_supports(cuda, tag):
    assert frameworks.cuda_wheel_tag("pytorch", cuda) == tag


def test_torch_refuses_a_driver_older_than_its_oldest_build():
    with pytest.raises(NotSupported, match="11.8"):
        frameworks.cuda_wheel_tag("pytorch", "11.4")


@pytest.mark.parametrize(
    ("cuda", "tag"),
    [("10.1", "cu101"), ("10.0", "cu100"), ("10.2", "cu102"), ("11.0", "cu110"),
     ("11.1", "cu110"), ("11.4", "cu112"), ("9.2", "cu92")],
)
def test_mxnet_build_matches_the_driver_as_the_document_did_by_hand(cuda, tag):
    assert frameworks.cuda_wheel_tag("mxnet", cuda) == tag


def test_the_documents_lesson_cuda_10_1_gets_mxnet_cu101(settings):
    plan = frameworks.install_plan("mxnet", "10.1", settings)
    assert plan.packages == ("mxnet-cu101",)
    assert plan.uses_gpu


def test_mxnet_on_cuda_12_is_refused_with_a_pointer_to_pytorch():
    with pytest.raises(NotSupported) as err:
        frameworks.cuda_wheel_tag("mxnet", "12.4")
    assert "MXNet has no build for CUDA 12.4" in err.value.message
    assert "pytorch" in err.value.hint


def test_jax_and_tensorflow_builds_follow_the_cuda_major(settings):
    assert frameworks.install_plan("jax", "12.4", settings).packages == ("jax[cuda12]",)
    assert frameworks.install_plan("jax", "13.0", settings).packages == ("jax[cuda13]",)
    assert frameworks.install_plan("jax", None, settings).packages == ("jax",)
    assert frameworks.install_plan("tensorflow", "12.2", settings).packages == (
        "tensorflow[and-cuda]",
    )
    assert frameworks.install_plan("tensorflow", None, settings).packages == ("tensorflow",)
    with pytest.raises(NotSupported):
        frameworks.cuda_wheel_tag("tensorflow", "11.8")


def test_torch_plan_points_at_the_index_of_its_cuda_build(settings):
    custom = settings.with_overrides(torch_index_url="http://127.0.0.1:9/whl/")
    plan = frameworks.install_plan("torch", "12.4", custom)
    assert plan.framework == "pytorch"
    assert plan.index_url == "http://127.0.0.1:9/whl/cu124"
    assert plan.packages == ("torch", "torchvision")
    cpu = frameworks.install_plan("pytorch", None, custom)
    assert cpu.index_url == "http://127.0.0.1:9/whl/cpu"
    assert not cpu.uses_gpu
    assert any("CPU build" in note for note in cpu.notes)


def test_framework_packages_setting_replaces_the_table_packages_but_keeps_the_index(settings):
    custom = settings.with_overrides(framework_packages="torch==2.13.0", pip_find_links="/opt/w")
    plan = frameworks.install_plan("pytorch", "12.8", custom)
    assert plan.packages == ("torch==2.13.0",)
    assert plan.index_url.endswith("/cu128")
    assert plan.find_links == "/opt/w"


def test_unknown_framework_says_which_one_was_meant(settings):
    with pytest.raises(InvalidInput) as err:
        frameworks.install_plan("pytorhc", None, settings)
    assert "pytorhc" in err.value.message
    assert err.value.hint == "did you mean 'pytorch'?"


def test_nvidia_smi_banner_gives_the_cuda_version():
    assert frameworks.parse_cuda_version(SMI_BANNER) == "12.4"
    assert frameworks.parse_cuda_version("CUDA Version: 10.1") == "10.1"
    assert frameworks.parse_cuda_version("command not found") is None
    assert frameworks.parse_cuda_version("") is None


def test_a_cuda_version_that_is_not_one_is_refused():
    with pytest.raises(InvalidInput):
        frameworks.cuda_wheel_tag("pytorch", "twelve")
