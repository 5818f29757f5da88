"""Settings: defaults < config file (TOML) < environment < flags.

Resolved once into a frozen `Settings` that is passed down; no other module reads
`os.environ` for gpubox's own settings. `GPUBOX_HOME` moves every file gpubox keeps
(config, keys, state) under one folder, which is also how tests isolate themselves.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gpubox.errors import InvalidInput

ENV_PREFIX = "GPUBOX_"


@dataclass(frozen=True)
class Settings:
    # Where gpubox keeps its files.
    config_dir: Path
    data_dir: Path
    cache_dir: Path

    # AWS. region None lets boto3 decide (AWS_REGION, profile), then gpubox's pick.
    region: str | None = None
    profile: str | None = None
    ssh_from: str | None = None  # CIDR admitted to tcp/22; else the detected public /32
    public_ip_url: str = "https://checkip.amazonaws.com"
    # EC2 endpoint template used to measure region latency ({region} is filled in).
    latency_endpoint: str = "ec2.{region}.amazonaws.com:443"
    # Reach AWS boxes through a jump host, or at a fixed address (private networks,
    # VPNs, port forwards). "host[:port]".
    ssh_jump: str | None = None
    ssh_address: str | None = None
    ssh_user_aws: str = "ubuntu"
    # Regions `up` may move to, in this order, when the chosen one has no capacity
    # (comma-separated); `--any-region` allows every enabled region, nearest first.
    failover_regions: str | None = None
    # Regions searched for your boxes (comma-separated, or a TOML list); default: every
    # region enabled for the account. Regions where gpubox saw a box are asked too.
    aws_regions: str | None = None

    # What the bootstrap installs.
    framework: str = "pytorch"
    python_env: str = "uv"  # uv | conda
    notebooks_url: str = "https://d2l.ai/d2l-en.zip"
    torch_index_url: str = "https://download.pytorch.org/whl"
    pip_index_url: str | None = None
    pip_find_links: str | None = None
    # Space-separated requirements that replace the framework's packages from the CUDA
    # table (pin a version, or a wheel that lies in pip_find_links), e.g. "torch==2.13.0".
    framework_packages: str | None = None
    install_driver: bool = True
    # Jupyter's port on the box (bound to its 127.0.0.1). Set, it pins that port; unset,
    # 8888, or a free port the bootstrap picks when another program holds 8888.
    jupyter_port: int | None = None

    # Idle auto-stop. Written "30m", "2h" or "off"; held as minutes, 0 meaning off.
    idle_stop_minutes: int = 60
    # Forward this machine's SSH agent on `gpubox ssh` (like `ssh -A`), so `git push`
    # works on the box without a key there. Off: a root user on the box can use it.
    forward_agent: bool = False
    max_hours: float | None = None  # stop after this much uptime whatever the box does
    # What the agent runs to stop the box (None: power off, through sudo -n when not root).
    idle_stop_command: str | None = None
    pre_stop: str | None = None  # runs on the box before any stop (e.g. git push)
    pre_stop_minutes: int = 5  # its time limit
    debug: bool = False

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.sqlite"

    @property
    def known_hosts_path(self) -> Path:
        return self.data_dir / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.data_dir / "ssh_config"

    @property
    def config_path(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def log_dir(self) -> Path:
        return self.cache_dir / "logs"

    def with_overrides(self, **values: Any) -> Settings:
        """Flags win over everything: apply those that were given (not None)."""
        given = {k: v for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **given)


def _dirs(env: Mapping[str, str]) -> tuple[Path, Path, Path]:
    home = env.get("GPUBOX_HOME")
    if home:
        root = Path(home).expanduser()
        return root / "config", root / "data", root / "cache"
    import platformdirs

    return (
        Path(platformdirs.user_config_dir("gpubox")),
        Path(platformdirs.user_data_dir("gpubox")),
        Path(platformdirs.user_cache_dir("gpubox")),
    )


def _checked_limit(name: str, raw: Any, source: str) -> Any:
    """The idle limit and the uptime cap pass the flag's own check, from every source."""
    from gpubox import idle

    try:
        if name == "idle_stop_minutes":
            return idle.parse_idle_limit(raw) or 0
        return idle.parse_max_hours(raw)
    except InvalidInput as exc:
        raise InvalidInput(f"setting '{name}' from {source}: {exc.message}", hint=exc.hint) from None


_LIMITS = ("idle_stop_minutes", "max_hours")


def _coerce(name: str, raw: Any, kind: Any, source: str) -> Any:
    if raw is None:
        return None
    if name in _LIMITS:
        return _checked_limit(name, raw, source)
    kind_text = str(kind)
    try:
        if "bool" in kind_text:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if "int" in kind_text:
            return int(raw)
        if "float" in kind_text:
            return float(raw)
        if isinstance(raw, list):  # a TOML list, e.g. aws_regions = ["us-east-1"]
            return ",".join(str(item) for item in raw)
        if "Path" in kind_text:
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError:
        raise InvalidInput(
            f"setting '{name}' from {source} has a bad value: {raw!r}",
            hint=f"expected {kind_text.replace(' | None', '')}",
        ) from None


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from defaults, the config file and the environment."""
    env = os.environ if env is None else env
    config_dir, data_dir, cache_dir = _dirs(env)
    values: dict[str, Any] = {}
    kinds = {f.name: f.type for f in fields(Settings)}
    config_path = Path(env.get("GPUBOX_CONFIG", config_dir / "config.toml"))
    from gpubox.localfiles import read_text

    text = read_text(config_path)  # None when there is none; unreadable: one clear error
    if text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(
                f"cannot read {config_path}: {exc}", hint="fix or remove the file"
            ) from None
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in kinds or name.endswith("_dir"):
                raise InvalidInput(
                    f"unknown setting '{key}' in {config_path}",
                    hint="see `gpubox config --help` for the settings there are",
                )
            values[name] = _coerce(name, raw, kinds[name], str(config_path))
    for name, kind in kinds.items():
        if name.endswith("_dir"):
            continue
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw, kind, ENV_PREFIX + name.upper())
    return Settings(config_dir=config_dir, data_dir=data_dir, cache_dir=cache_dir, **values)


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings) if not f.name.endswith("_dir")]


def write_setting(settings: Settings, name: str, value: str | None) -> Path:
    """Set (or, with None, remove) one setting in the config file, atomically."""
    kinds = {f.name: f.type for f in fields(Settings)}
    name = name.replace("-", "_")
    if name not in kinds or name.endswith("_dir"):
        from gpubox.errors import did_you_mean

        raise InvalidInput(f"unknown setting '{name}'", hint=did_you_mean(name, setting_names()))
    from gpubox.localfiles import locked, read_text, write_private

    path = settings.config_path
    if value is not None:
        _coerce(name, value, kinds[name], "the command line")
    with locked(path):  # two `config set` at once: both settings are kept
        data: dict[str, Any] = tomllib.loads(read_text(path) or "")
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
        lines = [f"{key} = {_toml_value(val)}" for key, val in sorted(data.items())]
        write_private(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
