"""AwsProvider: the Provider protocol on EC2. The cloud's tags are the truth.

Launch is idempotent per box name: an existing box (any region gpubox has used) is
returned, started if stopped, never doubled. A failed launch removes the key pair
and security group that it made itself, and nothing it found already there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gpubox.errors import CapacityError, GpuboxError, NotFound
from gpubox.providers.aws import catalog, instances, inventory, keypairs, network, placement, races
from gpubox.providers.aws.images import console_host_keys, resolve_image
from gpubox.providers.aws.session import (
    aws_errors,
    caller_identity,
    client,
    default_region,
    remember_region,
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
        self._looked: dict[str, tuple[Box | None, float]] = {}
        # True when the last launch() gave back a box it did not make (another gpubox's).
        self.launch_found = False

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
        """The fast path: regions gpubox made or saw boxes in, and the default one."""
        return inventory.known_regions(self.settings, self.state)

    def search_regions(self) -> list[str]:
        """Every region to ask: all enabled ones (or the `aws_regions` setting)."""
        return inventory.search_regions(self.settings, self.state)

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
        """The box called `name` in any region: the known regions first, then every other.

        Of several live instances with that name (a race another `up` lost), the oldest.
        """
        near = self.regions()
        cached = self.state.box(name)
        if cached is not None and cached.provider == "aws" and cached.region:
            near = [cached.region, *[r for r in near if r != cached.region]]
        found = self._list_in(near, name)
        if not any(b.state is not BoxState.TERMINATED for b in found):
            found += self._list_in([r for r in self.search_regions() if r not in near], name)
        live = [b for b in found if b.state is not BoxState.TERMINATED]
        box = (live or found or [None])[0]
        self._looked[name] = (box, time.monotonic())
        return box

    def list(self) -> list[Box]:
        return sorted(self._list_in(self.search_regions()), key=lambda b: b.name)

    def _list_in(self, regions: list[str], name: str | None = None) -> list[Box]:
        """gpubox's instances in these regions, asked in parallel: one DescribeInstances
        per region, one DescribeVolumes where there are any. Oldest first."""

        def in_region(region: str) -> list[Box]:
            found = instances.find_instances(self.settings, region, name)
            if not found:
                return []
            found.sort(key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))
            sizes = instances.root_volume_sizes(self.settings, region, found)
            return [
                instances.box_from(
                    self.settings, region, i, sizes.get(i["InstanceId"]), self._price(region, i)
                )
                for i in found
            ]

        answers = inventory.each_region(
            regions, in_region, lambda r, exc: self.say(f"could not look in {r}: {exc.message}")
        )
        for region, boxes in answers.items():
            if boxes:
                remember_region(self.state, region)
        return [b for region in regions for b in answers.get(region, [])]

    def launch(self, spec: BoxSpec) -> Box:
        looked = self._looked.pop(spec.name, None)  # what find() just said, not asked twice
        existing = looked[0] if looked and time.monotonic() - looked[1] < 10 else self.find(
            spec.name
        )
        self._looked.pop(spec.name, None)  # used once: what follows changes the answer
        self.launch_found = True  # until this process's own instance is the box
        if existing is not None and existing.state is not BoxState.TERMINATED:
            self.say(f"box '{spec.name}' exists ({existing.id}, {existing.state.value})")
            return existing if existing.state is BoxState.RUNNING else self.start(existing)
        if existing is not None and existing.id and existing.region:
            # Still shutting down from an earlier `down`: let it go before making its successor.
            instances.wait_for(self.settings, existing.region, existing.id, "terminated")
        spec = self._near_volume(spec)
        try:
            made = self._launch(spec)
        except GpuboxError as exc:
            raced = races.made_by_a_racer(self, spec.name, exc)
            if raced is None:
                raise
            self.say(f"another gpubox made box '{spec.name}' meanwhile ({raced.id}); using it")
            return raced if raced.state is not BoxState.PENDING else self.start(raced)
        box = races.keep_oldest(self, made)
        self.launch_found = box.id != made.id
        return box

    def _near_volume(self, spec: BoxSpec) -> BoxSpec:
        """A box with a data volume that exists is launched in the volume's zone (first);
        a request that cannot work (a shrink, another region, a volume in use, several
        volumes of the name) stops here, before anything is launched."""
        found = self.check_volume(spec.volume, region=spec.region)
        if found is None or spec.zone:
            return spec
        self.say(f"volume '{found.name}' is in {found.zone}: launching there when it has room")
        return dataclasses.replace(spec, region=found.region, zone=found.zone)

    def _launch(self, spec: BoxSpec) -> Box:
        """Preflight (region, offering, quota, price), then zones -> types -> regions."""
        if spec.cluster and spec.node_rank > 0:
            return self._launch_node(spec)
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
            inst = instances.launch_attempt(ctx, spec, instance_type, spec.zone)
        return self._box(region, inst)

    def _launch_node(self, spec: BoxSpec) -> Box:
        """A further node of a box of several: node 0's region, zone and type, in its
        placement group (a cluster group lives in one zone)."""
        head = self.find(spec.cluster or "")
        if head is None or head.state is BoxState.TERMINATED or not head.region:
            raise NotFound(f"node 0 ('{spec.cluster}') of '{spec.name}' does not exist",
                           hint=f"`gpubox up {spec.cluster} --nodes N ...` makes every node")
        instance_type = head.type or spec.type or ""
        with self.launch_context(spec, head.region, instance_type) as ctx:
            inst = instances.launch_attempt(ctx, spec, instance_type, head.get("az"))
        return self._box(head.region, inst)

    @contextlib.contextmanager
    def launch_context(
        self,
        spec: BoxSpec,
        region: str,
        instance_type: str,
        known: dict[str, dict] | None = None,
    ) -> Iterator[instances.LaunchContext]:
        """Check the type, image and address, make the key pair and security group; if the
        body raises, delete those this context made (never ones it found).

        `known` ({type: describe_instance_types answer}) comes from a preflight that has
        checked the type and where it is offered: neither is asked again."""
        self.say(f"checking {instance_type} in {region}")
        info = (known or {}).get(instance_type)
        gpu = catalog.gpu_type(self.settings, instance_type, region, info)
        if info is None:
            catalog.check_offered(self.settings, instance_type, region, HINT_REGIONS)
        image = resolve_image(self.settings, region, spec.image, gpu.arch)
        cidr, detected = network.ssh_source(self.settings, spec.ssh_from)
        identity = caller_identity(self.settings)
        owner = identity.get("Arn", "unknown")
        remember_region(self.state, region)
        key = group = None
        shared = spec.cluster or spec.name  # the nodes of one box share key, group, placement
        made_placement = False
        try:
            self.say(f"key pair and security group (SSH from {cidr})")
            key = keypairs.ensure_key_pair(self.settings, region, shared, owner)
            group = network.ensure_security_group(
                self.settings, region, shared, owner, cidr, detected
            )
            placement_group, efa = None, False
            if spec.cluster:
                network.admit_group_itself(self.settings, region, group.id)
                placement_group, made_placement = placement.ensure_placement_group(
                    self.settings, region, spec.cluster, owner)
                efa = placement.efa_supported(self.settings, region, instance_type)
                self.say(f"node {spec.node_rank} in placement group {placement_group}"
                         + (" with EFA" if efa else ""))
            yield instances.LaunchContext(
                settings=self.settings,
                region=region,
                image=image,
                key_name=key.name,
                group_id=group.id,
                owner=owner,
                account=identity.get("Account", ""),
                generation=group.id,
                on_progress=self.on_progress,
                wait_delay=self.wait_delay,
                placement_group=placement_group,
                efa=efa,
            )
        except BaseException:
            self._undo(region, key, group)
            if made_placement and spec.cluster:
                with contextlib.suppress(GpuboxError):
                    placement.delete_placement_group_if_unused(self.settings, region, spec.cluster)
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
        try:
            # The launch client does not retry: real AWS sends no-capacity as HTTP 500.
            with aws_errors(f"starting {iid}"):
                client(self.settings, "ec2", region, purpose="launch").start_instances(
                    InstanceIds=[iid]
                )
        except CapacityError as exc:
            raise no_capacity_to_start(box, inst) from exc
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
        shared = box.get("cluster") or box.name  # the nodes of one box share them
        if box.get("cluster"):
            with aws_errors(f"checking the other nodes of '{shared}'"):
                if network.instances_using(ec2, "tag:" + network.CLUSTER_TAG, shared):
                    return  # the last node takes the group, key and placement group with it
        self.say("removing its security group and key pair")
        own_name = network.resource_name(shared)
        for group in instances.security_groups(inst):
            if group.get("GroupName") == own_name:
                network.delete_security_group_if_unused(self.settings, region, group["GroupId"])
        if inst.get("KeyName") == own_name and keypairs.delete_key_pair_if_unused(
            self.settings, region, own_name
        ):
            keypairs.remove_key_file(keypairs.key_path(self.settings, shared))
        if box.get("cluster"):
            placement.delete_placement_group_if_unused(self.settings, region, shared)

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
        path = keypairs.key_path(self.settings, box.get("cluster") or box.name)
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

    # changing size (resize.py) -------------------------------------------------
    def plan_resize(self, box: Box, instance_type: str | None, disk_gb: int | None):
        from gpubox.providers.aws import resize

        return resize.plan(self.settings, box, self._current(box), instance_type, disk_gb)

    def apply_resize(self, plan) -> None:
        from gpubox.providers.aws import resize

        resize.apply(self.settings, plan, self.say)

    def move(self, box: Box, *, yes: bool = False, confirm=None):
        """The stopped box up in another zone of its region (moves.py)."""
        from gpubox.providers.aws import moves

        return moves.move(self, box, yes=yes, confirm=confirm)

    # data volumes (volumes.py) ------------------------------------------------
    def check_volume(self, text: str | None, box: Box | None = None, region: str | None = None):
        """The volume `text` asks for, looked for in every region, or None when it is to be
        made; an error when the box cannot have it (asked before a launch or a start)."""
        if text is None:
            return None
        from gpubox.providers.aws import volumes

        return volumes.check_request(
            self.settings, self.search_regions(), volumes.parse_request(text),
            region or (box.region if box else None), box.id if box else None,
        )  # fmt: skip

    def attach_volume(self, box: Box, text: str):
        """The data volume `text` ("NAME[:GiB]") made, grown or moved as needed, attached."""
        from gpubox.providers.aws import volumes

        identity = caller_identity(self.settings)
        return volumes.prepare(
            self.settings, self.search_regions(), volumes.parse_request(text), self._current(box),
            box.region or "", identity.get("Arn", "unknown"), self.say, self.wait_delay,
            account=identity.get("Account", ""),
        )  # fmt: skip

    def data_volumes(self, box: Box) -> list:
        from gpubox.providers.aws import volumes

        if not box.id or not box.region:
            return []
        return volumes.attached_to(self.settings, box.region, box.id)

    def delete_data_volume(self, volume) -> None:
        from gpubox.providers.aws import volumes

        # A terminated instance lets go of its volumes a moment after it is gone.
        volumes.wait_available(self.settings, volume, self.wait_delay)
        volumes.delete_volume(self.settings, volume, self.say, self.wait_delay)


def no_capacity_to_start(box: Box, inst: dict) -> CapacityError:
    """A stopped box AWS cannot start now, with the three ways out, each one a flag."""
    zone = inst.get("Placement", {}).get("AvailabilityZone", box.region)
    kind = inst.get("InstanceType", box.type)
    return CapacityError(
        f"AWS has no {kind} capacity in {zone} to start box '{box.name}' now",
        hint=f"wait for it: `gpubox start {box.name} --wait [--max-wait 30m]`; another type: "
        f"`gpubox start {box.name} --type g6.xlarge`; another zone (disk copied): "
        f"`gpubox start {box.name} --move`",
    )


def monthly_storage_cost(box: Box) -> float:
    """What the box's disk costs per month while it exists, stopped or not (gp3 $/GB-month)."""
    if not box.disk_gb:
        return 0.0
    return round(box.disk_gb * catalog.storage_price_per_gb_month(box.region or ""), 2)
