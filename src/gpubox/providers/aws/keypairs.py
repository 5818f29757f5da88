"""A box's key pair: made on AWS (ed25519), the private half kept only here.

The private key is written once, with mode 0600 from the moment the file exists,
and never printed. AWS cannot hand it out again, so a missing local copy is said
plainly and nothing is deleted to "fix" it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError
from gpubox.providers.aws.network import instances_using, resource_name, tags_for
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
    """Atomically, and 0600 from the first instant: O_EXCL temp file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(material if material.endswith("\n") else material + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _aws_key_exists(ec2: Any, key_name: str) -> bool:
    import botocore.exceptions

    try:
        ec2.describe_key_pairs(KeyNames=[key_name])
        return True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidKeyPair.NotFound":
            return False
        with aws_errors(f"looking up key pair {key_name}"):
            raise
    return False


@dataclass(frozen=True)
class KeyResult:
    name: str
    path: Path
    created_on_aws: bool
    created_file: bool


def ensure_key_pair(settings: Settings, region: str, box_name: str, owner: str) -> KeyResult:
    """The key pair gpubox-NAME and its private key file, made if missing, reused if both exist."""
    ec2 = client(settings, "ec2", region)
    key_name = resource_name(box_name)
    path = key_path(settings, box_name)
    on_aws = _aws_key_exists(ec2, key_name)
    if on_aws and path.exists():
        check_key_file(path)
        return KeyResult(key_name, path, False, False)
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
                TagSpecifications=[
                    {"ResourceType": "key-pair", "Tags": tags_for(box_name, owner, "key-pair")}
                ],
            )
        return KeyResult(key_name, path, True, False)
    with aws_errors(f"creating key pair {key_name}"):
        made = ec2.create_key_pair(
            KeyName=key_name,
            KeyType="ed25519",
            KeyFormat="pem",
            TagSpecifications=[
                {"ResourceType": "key-pair", "Tags": tags_for(box_name, owner, "key-pair")}
            ],
        )
    try:
        _write_private_key(path, made["KeyMaterial"])
    except OSError as exc:
        ec2.delete_key_pair(KeyName=key_name)
        raise GpuboxError(f"cannot write the private key to {path}: {exc}") from None
    return KeyResult(key_name, path, True, True)


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
    return True
