"""What the multi-node tests ask of gpubox's own records, in one place."""

from __future__ import annotations


def node0_sshd_of(name: str) -> str:
    """HOST:PORT the other nodes of the box `name` follow and report to (cluster.node0_sshd),
    from this test's GPUBOX_HOME."""
    from gpubox import cluster, config
    from gpubox.state import open_state

    settings = config.load()
    state = open_state(settings.state_path)
    try:
        return cluster.node0_sshd(settings, cluster.nodes_of(settings, state, name)[0].box)
    finally:
        state.close()
