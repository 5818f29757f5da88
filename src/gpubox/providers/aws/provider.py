"""AwsProvider: the Provider protocol on EC2. The cloud's tags are the truth.

Launch is idempotent per box name: an existing box (any region gpubox has used) is
returned, started if stopped, never doubled. A failed launch removes the key pair
and security group that it made itself, and nothing it found already there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError, NotFound
from gpubox.providers.aws import catalog, instances, keypairs, network
from gpubox.providers.aws.images import console_host_keys, resolve_image
from gpubox.providers.aws.session import (
    aws_errors,
    caller_identity,
    client,
    default_region,
    remember_region,
    used_regions,
)
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress, SshEndpoint

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

# Where "it is offered in ..." hints look when a type is missing from the chosen region.
HINT_REGIONS = (
    "us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1",
    "ap-southeast-1", "ap-south-1",
)


def choose_region(settings: Settings, spec: BoxSpec) -> str:
    """spec.region, else settings.region, else boto3's configured region, else the
    nearest region (measured latency) that offers the type."""
    from gpubox.providers.aws import failover

    configured = failover.configured_region(settings, spec.region)
    instance_type = spec.type or (spec.types[0] if spec.types else None)
    if configured or not instance_type:
        return configured or default_region(settings)
    return failover.nearest_region(settings, instance_type)


class AwsProvider:
    name = "aws"

    def __init__(
        self,
        settings: Settings,
        on_progress: Progress | None = None,
        state: State | None = None,
        region_chooser: Callable[[Settings, BoxSpec], str] = choose_region,
    ) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self._state = state
        self.choose_region = region_chooser
        self.wait_delay: float = instances.WAIT_DELAY_SECONDS

    # helpers ---------------------------------------------------------------
    def say(self, message: str) -> None:
        if self.on_progress:
            self.on_progress(message)

    @property
    def state(self) -> State:
        if self._state is None:
            from gpubox.state import State

            self._state = State(self.settings.state_path)
        return self._state

    def regions(self) -> list[str]:
        """Regions to look in: those gpubox has used, and the default one."""
        found = used_regions(self.state)
        home = default_region(self.settings)
        return found if home in found else [*found, home]

    def _box(self, region: str, inst: dict) -> Box:
        sizes = instances.root_volume_sizes(self.settings, region, [inst])
        return instances.box_from(
            self.settings, region, inst, sizes.get(inst["InstanceId"]), self._price(region, inst)
        )

    def _price(self, region: str, inst: dict) -> float | None:
        type_name = inst.get("InstanceType", "")
        try:
            if inst.get("InstanceLifecycle") == "spot":
                price = catalog.spot_price(self.settings, type_name, region)
            else:
                price = catalog.on_demand_price(self.settings, type_name, region)
        except GpuboxError:
            return None
        return price.value if price else None

    def _current(self, box: Box) -> dict:
        if not box.id or not box.region:
            raise NotFound(f"box '{box.name}' has no AWS instance id")
        return instances.describe(self.settings, box.region, box.id)

    # Provider --------------------------------------------------------------
    def find(self, name: str) -> Box | None:
        found = self._list_in(self.regions(), name)
        live = [b for b in found if b.state is not BoxState.TERMINATED]
        return (live or found or [None])[0]

    def list(self) -> list[Box]:
        return sorted(self._list_in(self.regions()), key=lambda b: b.name)

    def _list_in(self, regions: list[str], name: str | None = None) -> list[Box]:
        def in_region(region: str) -> list[Box]:
            found = instances.find_instances(self.settings, region, name)
            sizes = instances.root_volume_sizes(self.settings, region, found)
            return [
                instances.box_from(
                    self.settings, region, i, sizes.get(i["InstanceId"]), self._price(region, i)
                )
                for i in found
            ]

        if len(regions) == 1:
            return in_region(regions[0])
        with ThreadPoolExecutor(max_workers=min(8, len(regions))) as pool:
            return [b for boxes in pool.map(in_region, regions) for b in boxes]

    def launch(self, spec: BoxSpec) -> Box:
        existing = self.find(spec.name)
        if existing is not None and existing.state is not BoxState.TERMINATED:
            self.say(f"box '{spec.name}' exists ({existing.id}, {existing.state.value})")
            return existing if existing.state is BoxState.RUNNING else self.start(existing)
        if existing is not None and existing.id and existing.region:
            # Still shutting down from an earlier `down`: let it go before making its successor.
            instances.wait_for(self.settings, existing.region, existing.id, "terminated")
        return self._launch(spec)

    def _launch(self, spec: BoxSpec) -> Box:
        """Preflight (region, offering, quota, price), then zones -> types -> regions."""
        if self.choose_region is choose_region:
            from gpubox.providers.aws import failover

            return failover.launch(self, spec)
        return self._launch_once(spec)

    def _launch_once(self, spec: BoxSpec) -> Box:
        """One launch in the region an injected chooser gives (no preflight, no failover)."""
        region = self.choose_region(self.settings, spec)
        instance_type = spec.type or (spec.types[0] if spec.types else None)
        if not instance_type:
            raise GpuboxError("which GPU instance type?", hint="pass --type, e.g. g4dn.xlarge")
        with self.launch_context(spec, region, instance_type) as ctx:
            inst = instances.launch_attempt(ctx, spec, instance_type, None)
        return self._box(region, inst)

    @contextlib.contextmanager
    def launch_context(
        self, spec: BoxSpec, region: str, instance_type: str
    ) -> Iterator[instances.LaunchContext]:
        """Check the type, image and address, make the key pair and security group; if the
        body raises, delete those this context made (never ones it found)."""
        self.say(f"checking {instance_type} in {region}")
        gpu = catalog.gpu_type(self.settings, instance_type, region)
        catalog.check_offered(self.settings, instance_type, region, HINT_REGIONS)
        image = resolve_image(self.settings, region, spec.image, gpu.arch)
        cidr, detected = network.ssh_source(self.settings, spec.ssh_from)
        owner = caller_identity(self.settings).get("Arn", "unknown")
        remember_region(self.state, region)
        attempt = self._next_attempt(spec.name)
        key = group = None
        try:
            self.say(f"key pair and security group (SSH from {cidr})")
            key = keypairs.ensure_key_pair(self.settings, region, spec.name, owner)
            group = network.ensure_security_group(
                self.settings, region, spec.name, owner, cidr, detected
            )
            yield instances.LaunchContext(
                settings=self.settings,
                region=region,
                image=image,
                key_name=key.name,
                group_id=group.id,
                owner=owner,
                attempt=attempt,
                on_progress=self.on_progress,
                wait_delay=self.wait_delay,
            )
        except BaseException:
            self._undo(region, key, group)
            raise

    def _undo(self, region: str, key: keypairs.KeyResult | None, group) -> None:
        with contextlib.suppress(GpuboxError):
            if group is not None and group.created:
                network.delete_security_group_if_unused(self.settings, region, group.id)
        with contextlib.suppress(GpuboxError):
            if key is not None and key.created_on_aws:
                if keypairs.delete_key_pair_if_unused(self.settings, region, key.name) and (
                    key.created_file
                ):
                    keypairs.remove_key_file(key.path)

    def _next_attempt(self, name: str) -> int:
        key = f"aws.launch_attempt.{name}"
        attempt = int(self.state.get(key) or 0) + 1
        self.state.put(key, str(attempt))
        return attempt

    def stop(self, box: Box) -> Box:
        inst = self._current(box)
        state = inst["State"]["Name"]
        if state in ("terminated", "shutting-down"):
            raise GpuboxError(f"box '{box.name}' ({box.id}) is {state}; there is nothing to stop")
        if state == "stopped":
            return self._box(box.region or "", inst)
        if state == "pending":
            instances.wait_for(self.settings, box.region or "", inst["InstanceId"], "running")
        if state != "stopping":
            self.say(f"stopping {box.id}")
            with aws_errors(f"stopping {box.id}"):
                client(self.settings, "ec2", box.region).stop_instances(InstanceIds=[box.id])
        self.say(f"waiting for {box.id} to stop")
        done = instances.wait_for(self.settings, box.region or "", box.id or "", "stopped",
                                  self.wait_delay)
        return self._box(box.region or "", done)

    def start(self, box: Box) -> Box:
        inst = self._current(box)
        state = inst["State"]["Name"]
        if state in ("terminated", "shutting-down"):
            # moto would start it; real AWS refuses; gpubox refuses first and says why.
            raise GpuboxError(
                f"box '{box.name}' ({box.id}) was terminated; its disk is gone",
                hint=f"`gpubox up {box.name} --type ...` makes a new one",
            )
        region, iid = box.region or "", box.id or ""
        if state in ("running", "pending"):
            done = instances.wait_for(self.settings, region, iid, "running", self.wait_delay)
            return self._box(region, done)
        if state == "stopping":
            instances.wait_for(self.settings, region, iid, "stopped", self.wait_delay)
        self._follow_caller(box, inst)
        self.say(f"starting {iid}")
        with aws_errors(f"starting {iid}"):
            client(self.settings, "ec2", region).start_instances(InstanceIds=[iid])
        self.say(f"waiting for {iid} to run")
        done = instances.wait_for(self.settings, region, iid, "running", self.wait_delay)
        return self._box(region, done)

    def _follow_caller(self, box: Box, inst: dict) -> None:
        """A laptop's address changes between days: move the detected-address SSH rule to
        today's address (best effort; explicit --ssh-from rules stay as they are)."""
        own = [
            g["GroupId"] for g in inst.get("SecurityGroups", [])
            if g.get("GroupName") == network.resource_name(box.name)
        ]
        if not own or self.settings.ssh_from:
            return
        cidr = network.detect_public_cidr(self.settings)
        if cidr is None:
            return
        with contextlib.suppress(GpuboxError):
            if network.follow_detected_address(self.settings, box.region or "", own[0], cidr):
                self.say(f"SSH now admitted from {cidr} (your address today)")

    def terminate(self, box: Box) -> None:
        inst = self._current(box)
        region, iid = box.region or "", box.id or ""
        ec2 = client(self.settings, "ec2", region)
        if inst["State"]["Name"] != "terminated":
            spot_request = inst.get("SpotInstanceRequestId")
            if spot_request:
                # A persistent request would otherwise launch a replacement.
                with aws_errors(f"cancelling spot request {spot_request}"):
                    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[spot_request])
            self.say(f"terminating {iid}")
            with aws_errors(f"terminating {iid}"):
                ec2.terminate_instances(InstanceIds=[iid])
            instances.wait_for(self.settings, region, iid, "terminated", self.wait_delay)
        self.say("removing its security group and key pair")
        own_name = network.resource_name(box.name)
        for group in inst.get("SecurityGroups", []):
            if group.get("GroupName") == own_name:
                network.delete_security_group_if_unused(self.settings, region, group["GroupId"])
        if inst.get("KeyName") == own_name and keypairs.delete_key_pair_if_unused(
            self.settings, region, own_name
        ):
            keypairs.remove_key_file(keypairs.key_path(self.settings, box.name))

    def endpoint(self, box: Box) -> SshEndpoint:
        host, port = box.address, 22
        if self.settings.ssh_address:
            host, _, port_text = self.settings.ssh_address.partition(":")
            port = int(port_text) if port_text.isdigit() else 22
        if not host:
            raise GpuboxError(
                f"box '{box.name}' has no public address ({box.state.value})",
                hint=f"start it with `gpubox start {box.name}`, or set ssh_address",
            )
        path = keypairs.key_path(self.settings, box.name)
        if not keypairs.key_file_present(path):
            raise GpuboxError(
                f"the private key of box '{box.name}' is missing: {path}",
                hint="put your copy back there (chmod 600); AWS keeps none, so without it "
                "the box can only be reached by other means (e.g. EC2 Instance Connect)",
            )
        keypairs.check_key_file(path)
        host_keys: tuple[str, ...] = ()
        if box.id and box.region:
            with contextlib.suppress(GpuboxError):
                host_keys = console_host_keys(self.settings, box.region, box.id)
        return SshEndpoint(
            host=host,
            user=self.settings.ssh_user_aws,
            port=port,
            key_path=path,
            host_keys=host_keys,
            proxy_jump=self.settings.ssh_jump,
        )

    def monthly_storage_cost(self, box: Box) -> float:
        return monthly_storage_cost(box)


def monthly_storage_cost(box: Box) -> float:
    """What the box's disk costs per month while it exists, stopped or not (gp3 $/GB-month)."""
    if not box.disk_gb:
        return 0.0
    return round(box.disk_gb * catalog.storage_price_per_gb_month(box.region or ""), 2)
