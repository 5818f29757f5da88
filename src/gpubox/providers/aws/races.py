"""One box per name per account, when several `gpubox up NAME` run at once.

Two terminals of one laptop wait on each other (gpubox.locks). Across laptops the
cloud decides: the launch's ClientToken names the box, so racers that reach
RunInstances together get one instance back; what is left is settled here, after
the launch. Both sides of a race agree on which instance is the box (the oldest:
launch time, then id), so exactly one survives.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gpubox.providers.aws import instances, network
from gpubox.providers.aws.session import aws_errors, client
from gpubox.providers.base import Box, BoxState

if TYPE_CHECKING:
    from gpubox.errors import GpuboxError
    from gpubox.providers.aws.provider import AwsProvider

# How often a launch that failed on the box's own key pair or group looks for the
# instance the racer holding them is making.
RACER_LOOKS = 6


def keep_oldest(provider: AwsProvider, box: Box) -> Box:
    """After a launch, one box per name: when another live instance of the name is
    older (a racing `up` won), the one this process made is terminated at once and
    the older one is the box."""
    settings, region = provider.settings, box.region or ""
    found = instances.find_instances(settings, region, box.name)
    found.sort(key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))
    if not found or found[0]["InstanceId"] == box.id:
        return box
    older = found[0]
    ec2 = client(settings, "ec2", region)
    provider.say(f"another `gpubox up {box.name}` made {older['InstanceId']} first; "
                 f"terminating the second instance {box.id}")  # fmt: skip
    mine = next((i for i in found if i["InstanceId"] == box.id), {})
    with aws_errors(f"terminating {box.id}"):
        if mine.get("SpotInstanceRequestId"):  # a persistent request would launch it again
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[mine["SpotInstanceRequestId"]])
        ec2.terminate_instances(InstanceIds=[box.id])
    if older["State"]["Name"] == "pending":
        older = instances.wait_for(settings, region, older["InstanceId"], "running",
                                   provider.wait_delay)  # fmt: skip
    return provider._box(region, older)


def made_by_a_racer(provider: AwsProvider, name: str, exc: GpuboxError) -> Box | None:
    """The box another `up` of this name (another laptop) made while this one failed,
    if any. When this one failed on the box's own key pair or group (the racer holds
    them), it waits a little for the racer's instance to appear."""
    tries = RACER_LOOKS if network.resource_name(name) in exc.message else 1
    for number in range(tries):
        found = [b for b in provider._list_in(provider.regions(), name)
                 if b.state is not BoxState.TERMINATED]  # fmt: skip
        if found:
            return found[0]
        if number + 1 < tries:
            if number == 0:
                provider.say(f"box '{name}' seems to be being made elsewhere; waiting for it")
            time.sleep(provider.wait_delay)
    return None
