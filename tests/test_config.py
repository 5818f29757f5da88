from __future__ import annotations

import stat

import pytest

from gpubox import config
from gpubox.errors import InvalidInput


def test_defaults_file_environment_in_that_order(tmp_path):
    home = tmp_path / "h"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text('region = "eu-west-1"\nidle_stop_minutes = 30\n')
    env = {"GPUBOX_HOME": str(home), "GPUBOX_REGION": "us-west-2"}
    settings = config.load(env)
    assert settings.region == "us-west-2"  # environment beats the file
    assert settings.idle_stop_minutes == 30  # the file beats the default
    assert settings.framework == "pytorch"  # the default
    assert settings.with_overrides(region="ap-south-1", framework=None).region == "ap-south-1"


def test_everything_lives_under_gpubox_home(tmp_path):
    settings = config.load({"GPUBOX_HOME": str(tmp_path)})
    for path in (settings.keys_dir, settings.state_path, settings.known_hosts_path):
        assert tmp_path in path.parents


def test_unknown_setting_in_file_is_a_clear_error(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('regoin = "x"\n')
    with pytest.raises(InvalidInput, match="unknown setting 'regoin'"):
        config.load({"GPUBOX_HOME": str(tmp_path)})


def test_bad_value_in_environment_names_the_variable(tmp_path):
    with pytest.raises(InvalidInput, match="GPUBOX_JUPYTER_PORT"):
        config.load({"GPUBOX_HOME": str(tmp_path), "GPUBOX_JUPYTER_PORT": "lots"})


def test_write_setting_round_trips_and_suggests_on_typo(tmp_path):
    settings = config.load({"GPUBOX_HOME": str(tmp_path)})
    path = config.write_setting(settings, "region", "us-west-2")
    assert config.load({"GPUBOX_HOME": str(tmp_path)}).region == "us-west-2"
    assert not stat.S_IMODE(path.stat().st_mode) & 0o002
    config.write_setting(settings, "region", None)
    assert config.load({"GPUBOX_HOME": str(tmp_path)}).region is None
    with pytest.raises(InvalidInput) as err:
        config.write_setting(settings, "regin", "x")
    assert err.value.hint == "did you mean 'region'?"
