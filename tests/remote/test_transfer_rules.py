"""The small rules of cp, sync and forward: which side a path is on, where a copy goes,
what an ignore line means, what a port spec means. Pure functions, no host."""

from __future__ import annotations

import pytest

from gpubox.errors import InvalidInput
from gpubox.forwards import parse_forward
from gpubox.remote.sync import ignored
from gpubox.remote.transfer import Location, parse_location, target_path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("box1:~/data", Location("~/data", "box1")),
        ("box1:", Location("~", "box1")),
        ("d2l-gpu:/abs/p a", Location("/abs/p a", "d2l-gpu")),
        ("./a:b", Location("./a:b")),
        ("/x/y:z", Location("/x/y:z")),
        ("Data:x", Location("Data:x")),  # not a box name (boxes are lowercase)
        ("data", Location("data")),
    ],
)
def test_which_side_a_path_is_on(text, where):
    assert parse_location(text) == where


@pytest.mark.parametrize(
    ("src", "dst", "target"),
    [
        ("/h/data", "~/data", "~/data"),  # DST is the copy, the same on every run
        ("/h/data", "~/", "~/data"),
        ("/h/data/", "~", "~/data"),
        ("/b/results", ".", "./results"),
        ("/b/model.pt", "w/x.pt", "w/x.pt"),
    ],
)
def test_where_a_copy_goes(src, dst, target):
    assert target_path(src, dst) == target


def test_ignore_lines_read_simply():
    patterns = ["*.log", "build/", "/top.txt", "data/raw*"]
    assert ignored("sub/x.log", False, patterns)
    assert ignored("build", True, patterns) and not ignored("build", False, patterns)
    assert ignored("top.txt", False, patterns)
    assert ignored("data/raw1", True, patterns) and not ignored("data/cooked", True, patterns)
    assert not ignored("main.py", False, patterns)


def test_port_specs():
    assert parse_forward("6006") == (None, 6006)
    assert parse_forward("8000:8080") == (8000, 8080)
    for bad in ("x", "0", "70000", "a:1", ""):
        with pytest.raises(InvalidInput):
            parse_forward(bad)
