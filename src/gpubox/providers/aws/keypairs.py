"""A box's key pair: made on AWS (ed25519), the private half kept only here.

The private key is written once, with mode 0600 from the moment the file exists,
and never printed. AWS cannot hand it out again, so a missing local copy is said
plainly and nothing is deleted to "fix" it.
"""

from __future__ import annotations

import contextlib
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError
from gpubox.providers.aws.network import (
    BOX_TAG,
    CLIENT_TAG,
    instances_using,
    resource_name,
    tag_value,
    tags_for,
)
from gpubox.providers.aws.session import aws_errors, client, error_code

if TYPE_CHECKING:
    from gpubox.config import Settings


def key_path(settings: Settings, box_name: str) -> Path:
    return settings.keys_dir / f"{box_name}.pem"


def check_key_file(path: Path) -> None:
    """The private key must be readable by its owner only, or ssh itself refuses it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise GpuboxError(
            f"key file {path} is readable by others (mode {mode:o})",
            hint=f"chmod 600 {path}",
        )


def _write_private_key(path: Path, material: str) -> None:
    """Atomically, and 0600 from the first instant, in a 0700 folder."""
    from gpubox import inflight
    from gpubox.localfiles import tighten, write_private

    write_private(path, material if material.endswith("\n") else material + "\n")
    tighten(path.parent)
    inflight.made("key file", str(path))


def remove_key_file(path: Path) -> None:
    from gpubox import inflight
    from gpubox.localfiles import cannot

    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise cannot("remove", path, exc) from None
    inflight.gone("key file", str(path))


def _aws_key(ec2: Any, key_name: str) -> dict[str, Any] | None:
    """The key pair's description (with its tags), or None when AWS has none of that name."""
    import botocore.exceptions

    try:
        return ec2.describe_key_pairs(KeyNames=[key_name])["KeyPairs"][0]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidKeyPair.NotFound":
            return None
        with aws_errors(f"looking up key pair {key_name}"):
            raise
    return None


def _aws_key_exists(ec2: Any, key_name: str) -> bool:
    return _aws_key(ec2, key_name) is not None


# A key pair another gpubox made and no instance uses yet may be an `up` in progress there.
ORPHAN_AFTER_SECONDS = 600


def client_id(settings: Settings) -> str:
    import hashlib
    import socket

    return hashlib.sha256(f"{socket.gethostname()}|{settings.keys_dir}".encode()).hexdigest()[:16]


def _orphaned(settings: Settings, ec2: Any, found: dict[str, Any], box_name: str) -> bool:
    """A key pair gpubox made for this box (tagged) that no live instance uses, and that
    this gpubox made (an interrupted `up` that never stored its private key), or that is
    old enough not to be another machine's `up` in progress. Safe to replace."""
    import datetime as dt

    if tag_value(found, BOX_TAG) != box_name:
        return False  # not gpubox's (or another box's): not ours to delete
    made_at = found.get("CreateTime")
    old = isinstance(made_at, dt.datetime) and (
        dt.datetime.now(dt.UTC) - made_at
    ).total_seconds() > ORPHAN_AFTER_SECONDS
    if tag_value(found, CLIENT_TAG) != client_id(settings) and not old:
        return False
    with aws_errors(f"checking who uses key pair {found['KeyName']}"):
        return not instances_using(ec2, "key-name", found["KeyName"])


def _key_tags(settings: Settings, box_name: str, owner: str) -> list[dict[str, Any]]:
    tags = [*tags_for(box_name, owner, "key-pair"), {"Key": CLIENT_TAG, "Value": client_id(settings)}]
    return [{"ResourceType": "key-pair", "Tags": tags}]


@dataclass(frozen=True)
class KeyResult:
    name: str
    path: Path
    created_on_aws: bool
    created_file: bool


def ensure_key_pair(settings: Settings, region: str, box_name: str, owner: str) -> KeyResult:
    """The key pair gpubox-NAME and its private key file, made if missing, reused if both exist.
    Under a lock on the key file: two `up` of one box from this folder never make two keys."""
    from gpubox.localfiles import locked

    with locked(key_path(settings, box_name)):
        return _ensure_key_pair(settings, region, box_name, owner)


def _ensure_key_pair(settings: Settings, region: str, box_name: str, owner: str) -> KeyResult:
    from gpubox import inflight

    ec2 = client(settings, "ec2", region)
    key_name = resource_name(box_name)
    path = key_path(settings, box_name)
    found = _aws_key(ec2, key_name)
    if found and key_file_present(path):
        check_key_file(path)
        inflight.made("key pair", key_name, region, note="found")
        return KeyResult(key_name, path, False, False)
    if found and _orphaned(settings, ec2, found, box_name):
        # An interrupted `up` made it and lost its private half: make it again.
        with aws_errors(f"replacing key pair {key_name}"):
            ec2.delete_key_pair(KeyName=key_name)
        found = None
    on_aws = found is not None
    if on_aws:
        raise GpuboxError(
            f"key pair {key_name} exists in {region}, but its private key {path} is missing; "
            "AWS keeps no copy, so it cannot be downloaded again",
            hint=f"put your copy back at {path} (chmod 600); if it is lost, delete the key pair "
            f"yourself (`aws ec2 delete-key-pair --region {region} --key-name {key_name}`) "
            "and run this again",
        )
    if path.exists():
        # Our file outlived the AWS key pair (another region, or deleted): import its public half.
        check_key_file(path)
        public = _public_key_of(path)
        with aws_errors(f"importing key pair {key_name}"):
            ec2.import_key_pair(
                KeyName=key_name,
                PublicKeyMaterial=public.encode(),
                TagSpecifications=_key_tags(settings, box_name, owner),
            )
        inflight.made("key pair", key_name, region)
        return KeyResult(key_name, path, True, False)
    inflight.step(f"creating key pair {key_name} (it may exist already, without its private key)")
    with aws_errors(f"creating key pair {key_name}"):
        made = ec2.create_key_pair(
            KeyName=key_name,
            KeyType="ed25519",
            KeyFormat="pem",
            TagSpecifications=_key_tags(settings, box_name, owner),
        )
    inflight.made("key pair", key_name, region, note="its private key is not stored yet")
    try:
        _write_private_key(path, made["KeyMaterial"])
    except BaseException:  # unwritable folder, or interrupted: no key pair without its key
        with contextlib.suppress(Exception):
            ec2.delete_key_pair(KeyName=key_name)
            inflight.gone("key pair", key_name)
        raise
    inflight.made("key pair", key_name, region)
    return KeyResult(key_name, path, True, True)


def key_file_present(path: Path) -> bool:
    """The private key file is there (a keys folder that cannot be read is said plainly)."""
    try:
        return path.exists()
    except OSError as exc:
        from gpubox.localfiles import cannot

        raise cannot("read", path, exc) from None


def _public_key_of(path: Path) -> str:
    try:
        done = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpuboxError(f"cannot read the public key of {path}: {exc}") from None
    if done.returncode != 0:
        raise GpuboxError(
            f"cannot read the public key of {path}: {done.stderr.strip()}",
            hint="the file is not a usable private key; move it away and run this again",
        )
    return done.stdout.strip()


def delete_key_pair_if_unused(settings: Settings, region: str, key_name: str) -> bool:
    """Delete the AWS key pair when no live instance uses it; True when it is gone."""
    ec2 = client(settings, "ec2", region)
    with aws_errors(f"checking who uses key pair {key_name}"):
        if instances_using(ec2, "key-name", key_name):
            return False
        if not _aws_key_exists(ec2, key_name):
            return True
        ec2.delete_key_pair(KeyName=key_name)
    from gpubox import inflight

    inflight.gone("key pair", key_name)
    return True
