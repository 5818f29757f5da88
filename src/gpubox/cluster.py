"""A box of several machines: node 0 is the box NAME, nodes 1.. are NAME-1, NAME-2 ...

Each node is a normal box of the same provider (so `gpubox ssh NAME-1`, `status`, the
ssh config and the host-key pins work as for any box); what makes them one box is a
small cluster record on each: for ssh hosts `cluster`/`node` in hosts.json, on AWS the
tags `gpubox:cluster`/`gpubox:node`. The provider puts them there from
BoxSpec.cluster/node_rank and gives them back in Box.extra.

gpubox grows no distributed engine of its own: the nodes run PyTorch's
torch.distributed (torchrun) with the addresses `gpubox run` hands them (noderun.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubox import box as lifecycle
from gpubox import inflight, leftovers
from gpubox.errors import (
    ConfirmationRequired,
    GpuboxError,
    InvalidInput,
    NotFound,
    NotSupported,
    did_you_mean,
    refuse_node,
)
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress, Provider, SshEndpoint

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

MAX_NODES = 64


def node_name(name: str, rank: int) -> str:
    return name if rank == 0 else f"{name}-{rank}"


def rank_of(box: Box) -> int:
    return int(box.get("node") or 0)


def check_node_count(count: int | None, hosts: Sequence[str]) -> int:
    """How many nodes `up` makes: --nodes, else one per --host. Clear errors for nonsense."""
    if count is not None and count < 1:
        raise InvalidInput(
            f"--nodes {count}: a box needs at least one node",
            hint="pass --nodes 1 (or leave it out) for one machine, --nodes 2 or more for several",
        )
    if count is not None and count > MAX_NODES:
        raise InvalidInput(f"--nodes {count} is more than gpubox makes ({MAX_NODES})")
    if hosts and count is not None and count != len(hosts):
        raise InvalidInput(
            f"--nodes {count} but {len(hosts)} --host given",
            hint="give one --host per node (or leave --nodes out for ssh hosts)",
        )
    return count or max(1, len(hosts))


def node_specs(spec: BoxSpec, count: int, hosts: Sequence[str] = ()) -> list[BoxSpec]:
    """One spec per node; hosts (USER@HOST[:PORT], one per node) for the ssh provider."""
    lifecycle.check_name(spec.name)
    if count > 1 and spec.provider == "local":
        raise InvalidInput(
            "a local box is this one machine; it has no further nodes",
            hint="several machines: --host USER@HOST once per node, or --nodes N --type T on AWS",
        )
    if count > 1 and spec.volume:
        raise InvalidInput(
            "--volume attaches one data volume to one instance, not to several nodes",
            hint="leave --volume out for a box of several nodes (copy data with `gpubox cp`)",
        )
    specs = []
    for rank in range(count):
        name = node_name(spec.name, rank)
        lifecycle.check_name(name)
        node = replace(spec, name=name, cluster=spec.name if count > 1 else None, node_rank=rank,
                       nodes=count)
        if hosts:
            node = replace(node, host=hosts[rank], user=None, port=None)
        specs.append(node)
    return specs


@dataclass(frozen=True)
class Node:
    rank: int
    box: Box
    provider: Provider


def node_address(node: Node, endpoint: SshEndpoint) -> str:
    """Where the other nodes reach this one: an AWS node's private IP (inside the VPC and
    its placement group), else the address gpubox itself uses."""
    if endpoint.local:
        return "127.0.0.1"
    return node.box.get("private_ip") or endpoint.host


def nodes_of(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None
) -> list[Node]:
    """Every node of the box `name` by rank (just itself for a one-machine box)."""
    prov, head = lifecycle.find_box(settings, state, name, on_progress)
    if not head.get("cluster"):
        return [Node(0, head, prov)]
    members = [b for b in prov.list()
               if b.get("cluster") == head.get("cluster") and b.state is not BoxState.TERMINATED]
    found = {rank_of(b): b for b in members}
    found[rank_of(head)] = head
    return [Node(rank, box, prov) for rank, box in sorted(found.items())]


def status(
    settings: Settings,
    state: State,
    name: str | None = None,
    *,
    refresh: bool | None = None,
    warnings: list[str] | None = None,
) -> list[Box]:
    """lifecycle.status in status order; a box asked for by name comes with its nodes
    (those left, when node 0 is gone)."""
    try:
        boxes = lifecycle.status(settings, state, name, refresh=refresh, warnings=warnings)
    except NotFound:
        left = _headless(settings, state, name, "status", None) if name and refresh is not False \
            else []
        if not left:
            raise
        return in_status_order([n.box for n in left])
    if name is not None and boxes and boxes[0].get("cluster"):
        if refresh is False:
            boxes = [b for b in state.boxes() if b.get("cluster") == boxes[0].get("cluster")]
        else:
            boxes = [n.box for n in nodes_of(settings, state, name)]
    return in_status_order(boxes)


def in_status_order(boxes: Sequence[Box]) -> list[Box]:
    """Boxes by name, each multi-node box's nodes right under its node 0."""
    def key(b: Box) -> tuple[str, int]:
        return (b.get("cluster") or b.name, rank_of(b))

    return sorted(boxes, key=key)


def _unreachable(spec: BoxSpec, exc: GpuboxError) -> GpuboxError:
    where = f"{spec.user + '@' if spec.user else ''}{spec.host}" if spec.host else spec.name
    message = f"node {spec.node_rank} ('{spec.name}', {where}): {exc.message}"
    try:
        return type(exc)(message, hint=exc.hint)
    except TypeError:  # an error class with its own fields (SetupFailed ...)
        return GpuboxError(message, hint=exc.hint)


def up(
    settings: Settings,
    state: State,
    specs: Sequence[BoxSpec],
    *,
    setup: bool = True,
    framework: str | None = None,
    browser: bool = False,
    local_port: int | None = None,
    on_progress: Progress | None = None,
    on_step: Callable[[Any], None] | None = None,
    waiting: Any = None,
) -> lifecycle.UpResult:
    """Make (or find) every node, set them all up in parallel, open Jupyter on node 0.

    A node that cannot be made or reached fails the whole `up` with its name; the
    nodes this call made are removed again (ssh hosts forgotten, new AWS instances
    terminated: they hold nothing yet), so nothing is left half-made or billing.
    """
    if specs[0].provider == "aws" and len(specs) > 1:
        # A one-machine `up` learns whether NAME is another box's node from its own find
        # (box.up): the same DescribeInstances, asked once.
        check_aws_names(settings, state, specs)
    if len(specs) == 1:
        return lifecycle.up(settings, state, specs[0], setup=setup, framework=framework,
                            browser=browser, local_port=local_port, on_progress=on_progress,
                            on_step=on_step, waiting=waiting)
    name = specs[0].cluster or specs[0].name
    aws = specs[0].provider == "aws"
    inflight.begin(f"bringing up '{name}' ({len(specs)} nodes)",
                   undo=f"gpubox down {name}" + (" --yes" if aws else ""),
                   box=name if aws else None)  # fmt: skip
    with inflight.owning():
        return _up_nodes(settings, state, specs, setup=setup, framework=framework,
                         browser=browser, local_port=local_port, on_progress=on_progress,
                         on_step=on_step, waiting=waiting)


def check_aws_names(settings: Settings, state: State, specs: Sequence[BoxSpec]) -> None:
    """Before anything is made: the name is no node of another box; a box that exists
    as one machine is not grown into several (its instance is in no placement group),
    nor one of several shrunk; and no node's name (NAME-1 ...) is another box's."""
    from gpubox.providers.aws import resources

    name = specs[0].cluster or specs[0].name
    found = resources.live_named(settings, state, [s.name for s in specs])
    for inst in found.get(name, []):
        cluster = resources.tag_value(inst, resources.CLUSTER_TAG)
        if cluster and cluster != name:
            count = len(resources.scan(settings, state, cluster).ranks)
            raise refuse_node(name, cluster, resources.rank_of(inst), count, "up")
    head = found.get(name, [])
    if head and len(specs) > 1:
        if not any(resources.tag_value(i, resources.CLUSTER_TAG) for i in head):
            raise InvalidInput(
                f"box '{name}' exists as one machine; `up --nodes {len(specs)}` would make "
                f"{len(specs) - 1} more that are no part of it: nothing was made",
                hint=f"`gpubox up {name}` uses it as it is; for {len(specs)} nodes: "
                f"`gpubox down {name} --yes`, then `gpubox up {name} --nodes {len(specs)} ...`, "
                "or pick another name",
            )
        have = resources.scan(settings, state, name).ranks
        if len(specs) < len(have):
            raise InvalidInput(
                f"box '{name}' has {len(have)} nodes; `up` uses a box as it is, and removes "
                "no node to match a smaller --nodes: nothing was changed",
                hint=f"`gpubox up {name} --nodes {len(have)}` uses all of them; "
                f"`gpubox down {name} --yes` removes them",
            )
    for spec in specs[1:]:
        strangers = [i for i in found.get(spec.name, []) if resources.box_of(i) != name]
        if strangers:
            raise InvalidInput(
                f"node {spec.node_rank} of '{name}' would be called '{spec.name}', and another "
                f"box has that name ({strangers[0]['InstanceId']}): nothing was made",
                hint=f"pick another name for the box, or `gpubox down {spec.name}` first",
            )


def _up_nodes(
    settings: Settings,
    state: State,
    specs: Sequence[BoxSpec],
    *,
    setup: bool,
    framework: str | None,
    browser: bool,
    local_port: int | None,
    on_progress: Progress | None,
    on_step: Callable[[Any], None] | None,
    waiting: Any,
) -> lifecycle.UpResult:
    say = on_progress or (lambda _: None)
    results: list[lifecycle.UpResult] = []
    for spec in specs:
        say(f"node {spec.node_rank}: {spec.name}")
        try:
            results.append(lifecycle.up(settings, state, spec, setup=False,
                                        on_progress=on_progress, waiting=waiting))
        except GpuboxError as exc:
            say(f"node {spec.node_rank} failed; removing the nodes made just now")
            for made in reversed(results):
                if not made.created:
                    continue
                if spec.provider == "ssh":
                    _forget_host(settings, state, made.box)
                else:
                    lifecycle.down(settings, state, made.box.name, yes=True,
                                   on_progress=on_progress)
            raise _unreachable(spec, exc) from None
    head = results[0]
    if not setup:
        return replace(head, message="setup skipped (--no-setup)")
    from gpubox import jupyter
    from gpubox.setup import failure_noted

    state.journal(specs[0].name, "setup")
    with failure_noted(state, specs[0].name):  # `status` says what failed
        outcome = setup_nodes(settings, [(s, r.box) for s, r in zip(specs, results, strict=True)],
                              framework=framework, on_progress=say, on_step=on_step)
        prov = lifecycle.provider(settings, specs[0].provider)
        url = jupyter.open_jupyter(settings, state, head.box, prov.endpoint(head.box),
                                   local_port=local_port, browser=browser,
                                   remote_port=outcome[0].jupyter_port)
    state.journal(specs[0].name, "done", url=url)
    return replace(head, setup=outcome[0], url=url)


def _forget_host(settings: Settings, state: State, box: Box) -> None:
    from gpubox.remote.ssh_config import update_ssh_config

    lifecycle.provider(settings, "ssh").terminate(box)
    update_ssh_config(settings, box.name, None)
    state.forget(box.name)


def setup_nodes(
    settings: Settings,
    nodes: Sequence[tuple[BoxSpec, Box]],
    *,
    framework: str | None,
    on_progress: Progress,
    on_step: Callable[[Any], None] | None,
) -> list[Any]:
    """The same bootstrap on every node at once, one thread each (node 0's steps shown).

    Reaching each node (which pins its host key in the one known_hosts file) happens
    here first, one node after the other; only the setups run side by side."""
    from gpubox import setup as setup_mod
    from gpubox.remote import ssh as remote_ssh

    results: list[Any] = [None] * len(nodes)
    errors: list[tuple[BoxSpec, GpuboxError]] = []
    runners = []
    for spec, box in nodes:
        try:
            endpoint = lifecycle.provider(settings, spec.provider).endpoint(box)
            if not endpoint.local:
                on_progress(f"waiting for SSH on node {spec.node_rank} ({endpoint.host})")
                remote_ssh.wait_until_reachable(endpoint, settings, box.name)
        except GpuboxError as exc:
            raise _unreachable(spec, exc) from None
        runners.append(remote_ssh.runner_for(endpoint, settings, box.name))

    def one(index: int, spec: BoxSpec, box: Box) -> None:
        try:
            runner = runners[index]
            results[index] = setup_mod.run_setup(
                runner,
                settings.with_overrides(idle_stop_minutes=lifecycle.idle_limit_for(box, spec)),
                box_name=box.name, framework=framework,
                on_event=on_step if index == 0 else None, spot=box.spot,
                node_rank=spec.node_rank,
            )
            on_progress(f"node {spec.node_rank} ('{box.name}') is set up")
        except GpuboxError as exc:
            errors.append((spec, exc))

    threads = [threading.Thread(target=one, args=(i, s, b), daemon=True)
               for i, (s, b) in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        spec, exc = min(errors, key=lambda e: e[0].node_rank)
        raise _unreachable(spec, exc)
    on_progress("joining the nodes' idle guards: the box is idle only when every node is")
    join_guards(settings, [(s.node_rank, b, r) for (s, b), r in zip(nodes, runners, strict=True)])
    return results


def join_guards(settings: Settings, nodes: Sequence[tuple[int, Box, Any]]) -> None:
    """(rank, box, runner) of every node, node 0 first: nodes 1.. follow node 0 and report
    their own use to it after each check, so node 0 stops the box only when every node is
    idle, and the others follow it down (idle.join_nodes)."""
    from gpubox.idle import join_nodes
    from gpubox.remote.hostkeys import pinned_keys

    if len(nodes) < 2:
        return
    _, head, head_runner = nodes[0]
    endpoint = lifecycle.provider(settings, head.provider).endpoint(head)
    join_nodes(head_runner, [(rank, runner) for rank, _, runner in nodes[1:]],
               node0_sshd(settings, head), endpoint.user, pinned_keys(settings, head.name))


def node0_sshd(settings: Settings, head: Box) -> str:
    """HOST:PORT of node 0's sshd as the other nodes reach it: what their idle guards
    follow (`idle.py install --follow`) and report to. A node 1.. counts as in use while
    node 0's sshd answers, so it never stops while node 0 runs; once node 0 has stopped,
    it stops after its own idle limit. Node 0 decides, on its own use and the others'."""
    prov = lifecycle.provider(settings, head.provider)
    endpoint = prov.endpoint(head)
    port = endpoint.port if not head.get("private_ip") else 22
    return f"{node_address(Node(0, head, prov), endpoint)}:{port}"


def whole_nodes(
    settings: Settings, state: State, name: str, command: str, on_progress: Progress | None = None
) -> list[Node]:
    """nodes_of(name), refused with a hint when `name` is a node 1.. of another box.
    On AWS, a box whose node 0 is gone (terminated in the console, a spot interruption)
    is still its other nodes: `stop` stops them; anything else says what is left."""
    try:
        nodes = nodes_of(settings, state, name, on_progress)
    except NotFound:
        nodes = _headless(settings, state, name, command, on_progress)
        if not nodes:
            raise
    head = nodes[0].box if nodes else None
    cluster = head.get("cluster") if head is not None else None
    if head is not None and cluster and cluster != name:
        count = len(nodes_of(settings, state, cluster)) if command != "resize" else 0
        raise refuse_node(name, cluster, rank_of(head), count, command)
    return nodes


def _headless(
    settings: Settings, state: State, name: str, command: str, on_progress: Progress | None
) -> list[Node]:
    """The live nodes of an AWS box whose node 0 is gone (none when it has none)."""
    if not lives_on_aws(settings, state, name):
        return []
    from gpubox.providers.aws import resources

    res = resources.scan(settings, state, name)
    if not res.live:
        return []
    left = ", ".join(f"'{p.name}' ({p.state})" for p in res.instances)
    if command not in ("stop", "status"):
        raise GpuboxError(
            f"node 0 of '{name}' is gone (terminated outside gpubox); still there: {left}",
            hint=f"`gpubox down {name} --yes` removes them; `gpubox stop {name}` stops them",
        )
    prov = lifecycle.provider(settings, "aws", on_progress)
    names = {p.name for p in res.instances}
    boxes = [b for b in prov.list() if b.name in names and b.state is not BoxState.TERMINATED]
    return [Node(rank_of(b), b, prov) for b in sorted(boxes, key=rank_of)]


def lives_on_aws(settings: Settings, state: State, name: str) -> bool:
    """Whether `name` is (or was) an AWS box: the cache says so, or no host file knows it
    and gpubox uses AWS here (a new HOME with credentials sees the boxes made elsewhere)."""
    cached = state.box(name)
    if cached is not None:
        return cached.provider == "aws"
    for pname in lifecycle._cheap_providers():
        try:
            if lifecycle.provider(settings, pname).find(name) is not None:
                return False
        except GpuboxError:
            continue
    return lifecycle._aws_in_use(state, settings)


def stop(settings: Settings, state: State, name: str, on_progress: Progress | None = None) -> Box:
    """Stop every node (AWS; the ssh provider says it cannot); node 0's box is returned."""
    return stop_all(settings, state, name, on_progress)[0]


def stop_all(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None
) -> list[Box]:
    """Stop every node of the box; each node's box, node 0 first."""
    nodes = whole_nodes(settings, state, name, "stop", on_progress)
    aws = nodes[0].box.provider == "aws"
    inflight.begin(f"stopping '{name}'", finish=f"gpubox stop {name}",
                   undo=f"gpubox start {name}" if aws else None, box=name if aws else None)
    with inflight.owning():
        return [lifecycle.stop(settings, state, n.box.name, on_progress) for n in nodes]


def start(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None, **how: Any
) -> Box:
    """Start every node (`how`: lifecycle.start's options, for each); node 0's box.

    All or none: when one node cannot start (no capacity, gone), the nodes this call
    started are stopped again, and the error says so, or says what still runs and
    what it costs when stopping them failed too."""
    nodes = whole_nodes(settings, state, name, "start", on_progress)
    if len(nodes) == 1:
        return lifecycle.start(settings, state, name, on_progress, **how)
    if how.get("move") or how.get("instance_type"):
        flag = "--move" if how.get("move") else "--type"
        raise NotSupported(
            f"'{name}' has {len(nodes)} nodes; `start {flag}` changes one machine, and would "
            "take a node out of its placement group: nothing was changed",
            hint=f"`gpubox start {name} --wait` waits for capacity for all of them; or "
            f"`gpubox down {name} --yes` and `gpubox up {name} --nodes {len(nodes)} --type T`",
        )
    aws = nodes[0].box.provider == "aws"
    inflight.begin(f"starting '{name}' ({len(nodes)} nodes)", finish=f"gpubox start {name}",
                   undo=f"gpubox stop {name}", box=name if aws else None)
    started: list[Box] = []
    boxes: list[Box] = []
    with inflight.owning():
        for node in nodes:
            was_running = node.box.state is BoxState.RUNNING
            try:
                box = lifecycle.start(settings, state, node.box.name, on_progress,
                                      waiting=how.get("waiting"))
            except GpuboxError as exc:
                raise _start_rolled_back(settings, state, name, node, started, exc,
                                         on_progress) from None
            boxes.append(box)
            if not was_running:
                started.append(box)
    return boxes[0]


def _start_rolled_back(
    settings: Settings, state: State, name: str, failed: Node, started: list[Box],
    exc: GpuboxError, on_progress: Progress | None,
) -> GpuboxError:
    say = on_progress or (lambda _: None)
    stopped, left = [], []
    for box in reversed(started):
        say(f"node '{failed.box.name}' could not start: stopping '{box.name}' again")
        try:
            lifecycle.stop(settings, state, box.name, on_progress)
            stopped.append(box.name)
        except GpuboxError:
            left.append(box)
    message = f"node {failed.rank} ('{failed.box.name}') of '{name}' could not start: {exc.message}"
    if stopped:
        message += f"; stopped again the nodes this start had started ({', '.join(stopped)})"
    if left:
        per_hour = sum(b.price_per_hour or 0.0 for b in left)
        message += (f"; STILL RUNNING: {', '.join(b.name for b in left)}, about "
                    f"${per_hour:.2f}/h until `gpubox stop {name}`")
    else:
        message += f": no node of '{name}' was left running by this command"
    return type(exc)(message, hint=f"try again later: `gpubox start {name} --wait` waits for "
                     f"capacity for every node; `gpubox stop {name}` stops whatever runs")


def down(
    settings: Settings,
    state: State,
    name: str,
    *,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    on_progress: Progress | None = None,
    delete_volume: bool = False,
) -> Box:
    """Terminate (AWS) or forget (ssh) every node, with one question for all of them.

    On AWS it acts on everything the box owns there (providers/aws/resources.py), read
    by tag: every node, whatever node 0's state, then its security group, key pair and
    placement group; the private key goes only once nothing of the box is left."""
    lifecycle.check_name(name)
    if lives_on_aws(settings, state, name):
        return _down_aws(settings, state, name, yes=yes, confirm=confirm,
                         on_progress=on_progress, delete_volume=delete_volume)
    try:
        nodes = whole_nodes(settings, state, name, "down", on_progress)
    except NotFound:  # no live box: lifecycle.down removes what is left of it, if anything
        nodes = []
    if len(nodes) <= 1:
        return lifecycle.down(settings, state, name, yes=yes, confirm=confirm,
                              on_progress=on_progress, delete_volume=delete_volume)
    for node in reversed(nodes):  # ssh hosts: each forgotten, node 0 last
        lifecycle.down(settings, state, node.box.name, yes=True, on_progress=on_progress,
                       delete_volume=delete_volume)
    return replace(nodes[0].box, state=BoxState.TERMINATED)


def _down_question(res: Any, delete_volume: bool) -> str:
    instances = res.instances
    if len(instances) == 1:
        one = instances[0]
        disk = f"{one.disk_gb} GB " if one.disk_gb else ""
        text = (f"This terminates instance {one.id} ({one.type}, {one.region}) and DELETES its "
                f"{disk}root volume with everything on it: notebooks, data, installed packages.")
    else:
        ids = ", ".join(f"{p.name} {p.id}" for p in instances)
        text = (f"This terminates all {len(instances)} instances of '{res.name}' ({ids}) and "
                "DELETES their disks with everything on them.")
    shared = ["security group", "key pair"] + (
        ["placement group"] if res.of_kind("placement group") else [])
    text += f" Its {', '.join(shared)} go too. Saved images (`gpubox images`) are kept."
    volumes = res.of_kind("volume")
    if volumes:
        names = ", ".join(f"'{v.name}' ({v.disk_gb} GiB)" for v in volumes)
        text += (f" It also DELETES data volume {names} (--delete-volume)." if delete_volume
                 else f" Data volume {names} is kept (`gpubox volume rm` deletes it).")
    return text + (" Terminate it?" if len(instances) == 1 else " Terminate them?")


def _down_aws(
    settings: Settings, state: State, name: str, *, yes: bool,
    confirm: Callable[[str], bool] | None, on_progress: Progress | None, delete_volume: bool,
) -> Box:
    from gpubox import forwards, jupyter
    from gpubox.providers.aws import keypairs, resources

    inflight.begin(f"taking '{name}' down", finish=f"gpubox down {name} --yes", box=name)
    say = lifecycle._told(on_progress)
    node = resources.node_of(settings, state, name)
    if node is not None:
        raise refuse_node(name, node.box, node.rank, node.nodes, "down")
    res = resources.scan(settings, state, name)
    if not res.exists:  # nothing in AWS: what is left here, if anything
        if left := leftovers.remove(settings, state, name, on_progress):
            return Box(name=name, provider="leftovers", state=BoxState.TERMINATED,
                       extra=(("removed", "; ".join(left)),))  # fmt: skip
        raise NotFound(f"no box called '{name}'",
                       hint=did_you_mean(name, lifecycle.known_names(settings, state))
                       or "`gpubox status` lists your boxes")  # fmt: skip
    if res.live and not yes:
        if confirm is None or not confirm(_down_question(res, delete_volume)):
            raise ConfirmationRequired(
                f"not terminating '{name}': nothing was deleted",
                hint=f"run it in a terminal to answer the question, or pass --yes: "
                f"`gpubox down {name} --yes`",
            )
    nodes = list(dict.fromkeys([name, *(p.name for p in res.instances)]))
    for node_name in nodes:
        jupyter.close_jupyter(settings, state, node_name)
        forwards.close_forwards(settings, state, node_name)
    for part in res.instances:
        inflight.made("instance", part.id, part.region, part.per_hour or None,
                      f"'{part.name}', {part.state}")  # fmt: skip
    resources.terminate_instances(settings, res, say)
    _volumes_after_down(settings, res, delete_volume, say)
    removed = resources.remove_shared(settings, resources.scan(settings, state, name, res.regions),
                                      say)  # fmt: skip
    after = resources.scan(settings, state, name, res.regions)
    key_file = keypairs.key_path(settings, name)
    try:
        if not after.exists:  # the private key goes last, once nothing of the box is left
            had_key = leftovers._exists(key_file)
            keypairs.remove_key_file(key_file)
            removed += [f"key file {key_file}"] if had_key else []
        for node_name in nodes:
            leftovers.forget_here(settings, state, node_name)
    except GpuboxError as exc:  # the box is gone; only a local file could not be changed
        raise GpuboxError(
            f"'{name}' is terminated, but {exc.message}",
            hint=f"{exc.hint}; then `gpubox down {name}` removes what is left here",
        ) from None
    if after.exists:
        raise GpuboxError(
            f"'{name}' is not all gone; still in AWS:\n" + "\n".join(after.lines()),
            hint=f"run `gpubox down {name} --yes` again (it finds them by tag); "
            f"the private key {key_file} is kept until they are gone",
        )
    extra: tuple[tuple[str, str], ...] = (("nodes", ", ".join(nodes)),)
    if not res.live:
        extra += (("removed", "; ".join(removed) or "its local files"),)
    return Box(name=name, provider="aws", state=BoxState.TERMINATED, extra=extra)


def _volumes_after_down(settings: Settings, res: Any, delete_volume: bool, say: Progress) -> None:
    from gpubox.providers.aws import volumes

    for part in res.of_kind("volume"):
        if not delete_volume:
            say(f"kept volume '{part.name}' ({part.disk_gb} GiB, {part.region}): about "
                f"${part.per_month:.2f}/month until `gpubox volume rm {part.name}`")  # fmt: skip
            continue
        for vol in volumes.list_volumes(settings, [part.region], part.name):
            if vol.id == part.id:
                volumes.wait_available(settings, vol)
                volumes.delete_volume(settings, vol, say)
                say(f"deleted volume '{vol.name}' ({vol.size_gb} GiB)")
