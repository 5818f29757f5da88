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
from gpubox.errors import ConfirmationRequired, GpuboxError, InvalidInput, NotFound
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress, Provider

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
    """lifecycle.status in status order; a box asked for by name comes with its nodes."""
    boxes = lifecycle.status(settings, state, name, refresh=refresh, warnings=warnings)
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
    say = on_progress or (lambda _: None)
    if len(specs) == 1:
        return lifecycle.up(settings, state, specs[0], setup=setup, framework=framework,
                            browser=browser, local_port=local_port, on_progress=on_progress,
                            on_step=on_step, waiting=waiting)
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
    from gpubox.noderun import node_address

    prov = lifecycle.provider(settings, head.provider)
    endpoint = prov.endpoint(head)
    port = endpoint.port if not head.get("private_ip") else 22
    return f"{node_address(Node(0, head, prov), endpoint)}:{port}"


def stop(settings: Settings, state: State, name: str, on_progress: Progress | None = None) -> Box:
    """Stop every node (AWS; the ssh provider says it cannot); node 0's box is returned."""
    nodes = nodes_of(settings, state, name, on_progress)
    return [lifecycle.stop(settings, state, n.box.name, on_progress) for n in nodes][0]


def start(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None, **how: Any
) -> Box:
    """Start every node (`how`: lifecycle.start's options, for each); node 0's box."""
    nodes = nodes_of(settings, state, name, on_progress)
    return [lifecycle.start(settings, state, n.box.name, on_progress, **how) for n in nodes][0]


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
    """Terminate (AWS) or forget (ssh) every node, with one question for all of them."""
    try:
        nodes = nodes_of(settings, state, name, on_progress)
    except NotFound:  # no live box: lifecycle.down removes what is left of it, if anything
        nodes = []
    if len(nodes) <= 1:
        return lifecycle.down(settings, state, name, yes=yes, confirm=confirm,
                              on_progress=on_progress, delete_volume=delete_volume)
    head = nodes[0].box
    if head.provider == "aws" and not yes:
        ids = ", ".join(n.box.id or n.box.name for n in nodes)
        question = (f"This terminates all {len(nodes)} nodes of '{name}' ({ids}) and DELETES "
                    "their disks with everything on them; their placement group, security "
                    "group and key pair go too. Terminate them?")
        if confirm is None or not confirm(question):
            raise ConfirmationRequired(
                f"not terminating '{name}': nothing was deleted",
                hint=f"run it in a terminal to answer the question, or pass --yes: "
                f"`gpubox down {name} --yes`",
            )
    for node in reversed(nodes):  # node 0 last: it owns what the nodes share
        lifecycle.down(settings, state, node.box.name, yes=True, on_progress=on_progress,
                       delete_volume=delete_volume)
    return replace(head, state=BoxState.TERMINATED)
