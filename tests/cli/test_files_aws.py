"""`gpubox cp`, `sync` and `forward` to an AWS box that is stopped: the real command
against moto's server; one clear error naming `gpubox start NAME`, nothing sent."""

from __future__ import annotations

from tests.cli.test_aws_subprocess import SSH_FROM, endpoint, gpubox  # noqa: F401 (a fixture)


def test_a_stopped_box_is_a_clear_error_for_files_and_ports(endpoint, tmp_path):  # noqa: F811
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    assert gpubox("stop", "box1").returncode == 0
    (tmp_path / "notes.txt").write_text("x")
    for args in (("cp", str(tmp_path / "notes.txt"), "box1:~/notes.txt"),
                 ("cp", "box1:~/d2l", str(tmp_path)),
                 ("sync", "box1", str(tmp_path)),
                 ("forward", "box1", "6006")):
        done = gpubox(*args)
        assert done.returncode != 0, args
        assert "box 'box1' is stopped" in done.stderr and "gpubox start box1" in done.stderr
        assert "Traceback" not in done.stderr
