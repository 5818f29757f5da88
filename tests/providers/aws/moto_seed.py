"""What moto lacks and the AWS provider needs: the public SSM image parameters and the
images they name, seeded straight into moto's backends (put_parameter refuses /aws/...).

Used in-process under `mock_aws` and, because ThreadedMotoServer shares these backends,
for the `gpubox` subprocess tests too.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from gpubox.providers.aws.images import IMAGE_PARAMETERS

ACCOUNT = "123456789012"
AMAZON_OWNER = "898082745236"


def image_id(alias: str, arch: str, region: str) -> str:
    return "ami-" + hashlib.sha256(f"{alias}{arch}{region}".encode()).hexdigest()[:17]


def seed_images(region: str, skip: tuple[str, ...] = ()) -> dict[tuple[str, str], str]:
    """Public dlami/ubuntu images and the SSM parameters naming them; {(alias, arch): id}."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami
    from moto.ssm.models import Parameter, ssm_backends

    ec2 = ec2_backends[ACCOUNT][region]
    ssm = ssm_backends[ACCOUNT][region]
    made = {}
    for (alias, arch), parameter in IMAGE_PARAMETERS.items():
        if alias in skip:
            continue
        ami_id = image_id(alias, arch, region)
        if ami_id not in ec2.amis:
            ec2.amis[ami_id] = Ami(
                ec2,
                ami_id,
                name=f"{alias} test image {arch}",
                owner_id=AMAZON_OWNER,
                public=True,
                architecture=arch,
                virtualization_type="hvm",
                root_device_type="ebs",
                root_device_name="/dev/sda1",
                region_name=f"{region}a",
            )
        ssm._parameters[parameter].append(
            Parameter(
                account_id=ACCOUNT,
                name=parameter,
                value=ami_id,
                parameter_type="String",
                description=None,
                allowed_pattern=None,
                keyid=None,
                last_modified_date=dt.datetime.now(dt.UTC),
                version=len(ssm._parameters[parameter]) + 1,
                data_type="aws:ec2:image",
            )
        )
        made[(alias, arch)] = ami_id
    return made


CONSOLE_WITH_KEYS = """[   12.345678] cloud-init[1234]: Cloud-init v. 23.1 running 'modules:final'
ec2:
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG root@ip-10-0-0-1 (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNfBzQx7UUJa+K5V2sSh+xRP4VPRCzv5wBHR02qkmzWsRy7Mjuuo2p2YPU3lRI+7aMCWZNFABis77Wk9mQbQwgM= root@ip-10-0-0-1
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdyz/ISSU8KQEnfkDBO8DyJIjP1oUAn5ODUWnt+S0Zg root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
[   13.000000] cloud-init[1234]: Cloud-init v. 23.1 finished
"""

HOST_KEYS = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNfBzQx7UUJa+K5V2sSh+xRP4VPRCzv5wBHR02qkmzWsRy7Mjuuo2p2YPU3lRI+7aMCWZNFABis77Wk9mQbQwgM=",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdyz/ISSU8KQEnfkDBO8DyJIjP1oUAn5ODUWnt+S0Zg",
)
