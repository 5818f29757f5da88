"""Which machine image a box starts from, and the host keys its console shows.

"dlami" and "ubuntu" are looked up through AWS's public SSM parameters, so they are
always the latest image AWS or Canonical published for the region, never an id
that goes stale in our code.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError, InvalidInput, NotFound, did_you_mean
from gpubox.providers.aws.session import aws_errors, client, error_code

if TYPE_CHECKING:
    from gpubox.config import Settings

DEFAULT_IMAGE = "dlami"
# (alias, architecture) -> public SSM parameter holding the latest AMI id.
IMAGE_PARAMETERS: dict[tuple[str, str], str] = {
    ("dlami", "x86_64"): "/aws/service/deeplearning/ami/x86_64/"
    "base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    ("dlami", "arm64"): "/aws/service/deeplearning/ami/arm64/"
    "base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    ("ubuntu", "x86_64"): "/aws/service/canonical/ubuntu/server/22.04/stable/current/"
    "amd64/hvm/ebs-gp2/ami-id",
    ("ubuntu", "arm64"): "/aws/service/canonical/ubuntu/server/22.04/stable/current/"
    "arm64/hvm/ebs-gp2/ami-id",
}
IMAGE_TAG = "gpubox:image"
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    arch: str
    root_device_name: str
    source: str  # "dlami", "ubuntu", "ami", "saved"
    root_size_gb: int | None = None


def _image_from(found: dict, source: str) -> Image:
    root = found.get("RootDeviceName") or "/dev/sda1"
    size = None
    for mapping in found.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            size = mapping["Ebs"].get("VolumeSize")
    return Image(
        id=found["ImageId"],
        name=found.get("Name") or found["ImageId"],
        arch=found.get("Architecture") or "x86_64",
        root_device_name=root,
        source=source,
        root_size_gb=int(size) if size else None,
    )


def _describe_image(settings: Settings, region: str, image_id: str) -> dict | None:
    import botocore.exceptions

    try:
        with aws_errors(f"looking up image {image_id}"):
            images = client(settings, "ec2", region).describe_images(ImageIds=[image_id])
    except GpuboxError as exc:
        cause = exc.__cause__
        if isinstance(cause, botocore.exceptions.ClientError) and error_code(cause).startswith(
            "InvalidAMIID"
        ):
            return None
        raise
    found = images.get("Images", [])
    return found[0] if found else None


def _from_parameter(settings: Settings, region: str, alias: str, arch: str) -> Image:
    parameter = IMAGE_PARAMETERS[(alias, arch)]
    import botocore.exceptions

    try:
        value = client(settings, "ssm", region).get_parameter(Name=parameter)["Parameter"]["Value"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "ParameterNotFound":
            with aws_errors(f"looking up the latest {alias} image"):
                raise
        raise NotFound(
            f"no {alias} image for {arch} in {region} (SSM parameter {parameter} is missing)",
            hint="try another region, or --image ubuntu / --image ami-...",
        ) from None
    found = _describe_image(settings, region, value)
    if found is None:
        raise NotFound(
            f"the {alias} image {value} named by {parameter} does not exist in {region}",
            hint="try again later, or pass --image ami-...",
        )
    return _image_from(found, alias)


def _saved_image(settings: Settings, region: str, name: str) -> Image | None:
    with aws_errors(f"looking up saved image '{name}'"):
        found = client(settings, "ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{IMAGE_TAG}", "Values": [name]}]
        )["Images"]
    available = [i for i in found if i.get("State", "available") == "available"]
    if not available:
        return None
    newest = max(available, key=lambda i: i.get("CreationDate", ""))
    return _image_from(newest, "saved")


def _saved_names(settings: Settings, region: str) -> list[str]:
    with aws_errors(f"listing saved images in {region}"):
        found = client(settings, "ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag-key", "Values": [IMAGE_TAG]}]
        )["Images"]
    return [t["Value"] for i in found for t in i.get("Tags", []) if t["Key"] == IMAGE_TAG]


def resolve_image(settings: Settings, region: str, image: str | None, arch: str) -> Image:
    """The AMI to launch: "dlami" (default), "ubuntu", an "ami-..." id, or a saved image name."""
    wanted = (image or DEFAULT_IMAGE).strip()
    if (wanted, arch) in IMAGE_PARAMETERS:
        return _from_parameter(settings, region, wanted, arch)
    if wanted.startswith("ami-"):
        if not AMI_ID.match(wanted):
            raise InvalidInput(f"'{wanted}' is not an AMI id", hint="AMI ids look like ami-0abc1234")
        found = _describe_image(settings, region, wanted)
        if found is None:
            raise NotFound(
                f"image {wanted} does not exist in {region} (or is not shared with you)",
                hint="AMI ids differ per region: pass the id from this region, or --region",
            )
        picked = _image_from(found, "ami")
    else:
        picked = _saved_image(settings, region, wanted)
        if picked is None:
            raise NotFound(
                f"no image called '{wanted}' in {region}",
                hint=did_you_mean(wanted, [*_saved_names(settings, region), "dlami", "ubuntu"])
                or "use dlami, ubuntu, an ami-... id, or a name from `gpubox images`",
            )
    if picked.arch != arch:
        raise InvalidInput(
            f"image {picked.id} is for {picked.arch}, the instance type is {arch}",
            hint="pick an image and a type of the same architecture",
        )
    return picked


# Host keys from the console ----------------------------------------------------

HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"
_KEY_LINE = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+)\s+([A-Za-z0-9+/=]+)")


def parse_host_keys(console: str) -> tuple[str, ...]:
    """The public host keys cloud-init printed between the BEGIN/END SSH HOST KEY markers."""
    keys: list[str] = []
    inside = False
    for raw in console.splitlines():
        line = raw.strip()
        # cloud-init lines may carry a "[ 12.3] cloud-init[...]: " prefix before the marker.
        if HOST_KEYS_BEGIN in line:
            inside, keys = True, []
            continue
        if HOST_KEYS_END in line:
            inside = False
            continue
        if inside:
            match = _KEY_LINE.search(line)
            if match and _is_base64(match.group(2)):
                keys.append(f"{match.group(1)} {match.group(2)}")
    return tuple(dict.fromkeys(keys))


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def console_host_keys(settings: Settings, region: str, instance_id: str) -> tuple[str, ...]:
    """Host keys from the instance's console output; () while the console has none yet."""
    with aws_errors(f"reading the console of {instance_id}"):
        found = client(settings, "ec2", region).get_console_output(InstanceId=instance_id)
    output = found.get("Output") or ""
    # boto3 decodes the base64 console for us; the raw API form is accepted too.
    if output and HOST_KEYS_BEGIN not in output:
        try:
            output = base64.b64decode(output, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    return parse_host_keys(output)
