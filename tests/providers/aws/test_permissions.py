"""The permission table is the truth about gpubox's AWS calls, both ways.

Statically: every boto3 client call in src/gpubox (a method named like an operation of
a service gpubox uses, a paginator, a waiter) is in the table, and every entry of the
table is called somewhere. At run time: tests/aws_calls.py records the calls the whole
suite makes and fails the run on one the table lacks; here its recorder is tested on
real calls against moto.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from gpubox.providers.aws import permissions
from gpubox.providers.aws.permissions import DRY_RUN, FEATURES, NONE, PERMISSIONS, READ

SOURCE = Path(permissions.__file__).resolve().parents[2]  # src/gpubox
BOTO = botocore.session.get_session()
# Receivers that are gpubox objects with methods named like AWS operations, not clients
# (AwsProvider.attach_volume, volumes.delete_volume ...).
NOT_CLIENTS = {"self", "prov", "provider", "aws"}


def operations() -> dict[str, set[str]]:
    """{python method name: {"service:Operation", ...}} for the services gpubox uses."""
    found: dict[str, set[str]] = {}
    for service in permissions.IAM_PREFIX:
        for op in BOTO.get_service_model(service).operation_names:
            found.setdefault(xform_name(op), set()).add(f"{service}:{op}")
    return found


def waiters() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for service in permissions.IAM_PREFIX:
        try:
            model = BOTO.get_waiter_model(service)
        except Exception:  # noqa: BLE001 - a service without waiters
            continue
        for name in model.waiter_names:
            found.setdefault(xform_name(name), set()).add(
                f"{service}:{model.get_waiter(name).operation}")
    return found


def calls_in_source() -> dict[str, list[str]]:
    """{"service:Operation" (or "a|b" when the name fits several): [where ...]}."""
    ops, waits = operations(), waiters()
    found: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {alias.asname or alias.name.split(".")[0]
                   for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names}  # fmt: skip
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name, receiver = node.func.attr, node.func.value
            if isinstance(receiver, ast.Name) and receiver.id in modules | NOT_CLIENTS:
                continue
            where = f"{path.relative_to(SOURCE)}:{node.lineno}"
            first = node.args[0] if node.args else None
            literal = first.value if isinstance(first, ast.Constant) else None
            if name == "get_paginator" and isinstance(literal, str):
                candidates = ops.get(literal, set())
            elif name == "get_waiter" and isinstance(literal, str):
                candidates = waits.get(literal, set())
            else:
                candidates = ops.get(name, set())
            if candidates:
                found.setdefault("|".join(sorted(candidates)), []).append(where)
    return found


def test_every_aws_call_in_the_source_is_in_the_table():
    table = set(permissions.by_call())
    missing = {calls: where for calls, where in calls_in_source().items()
               if not table & set(calls.split("|"))}
    assert missing == {}


def test_every_table_entry_is_called_somewhere_in_the_source():
    called = {c for calls in calls_in_source() for c in calls.split("|")}
    assert sorted(set(permissions.by_call()) - called) == []


def test_entries_name_real_operations_and_say_how_they_are_checked():
    for perm in PERMISSIONS:
        model = BOTO.get_service_model(perm.service)
        assert perm.operation in model.operation_names, perm.call
        assert perm.feature in FEATURES and set(perm.also) <= set(FEATURES) and perm.disables
        assert perm.check in (DRY_RUN, READ, NONE)
        assert (perm.params is None) == (perm.check == NONE), perm.call
        if perm.check == DRY_RUN:
            assert "DryRun" in model.operation_model(perm.operation).input_shape.members, perm.call
    assert len(permissions.by_call()) == len(PERMISSIONS)  # one entry per call


def test_the_policy_is_the_table_and_each_feature_adds_its_own():
    everything = permissions.policy()
    assert permissions.policy_actions(everything) == {p.iam_action for p in PERMISSIONS}
    core = permissions.policy_actions(permissions.policy(["core"]))
    for feature in FEATURES:
        own = {p.iam_action for p in PERMISSIONS if feature in (p.feature, *p.also)}
        assert permissions.policy_actions(permissions.policy([feature])) == core | own
    compact = json.dumps(everything, separators=(",", ":"))
    assert len(compact) < permissions.MANAGED_POLICY_LIMIT  # one managed policy holds it
    with pytest.raises(Exception, match="unknown feature: gpu"):
        permissions.policy(["gpu"])


def test_gpubox_sessions_record_their_calls_and_tests_boto3_does_not(aws, settings, tmp_path,
                                                                    monkeypatch):
    import boto3

    from gpubox.providers.aws import instances
    from gpubox.providers.aws.session import aws_session
    from tests.aws_calls import missing_from_table, recorded

    record = tmp_path / "calls.txt"
    monkeypatch.setenv("GPUBOX_RECORD_CALLS", str(record))
    aws_session.cache_clear()  # a fresh session reads the variable
    try:
        boto3.client("ec2", region_name="us-east-1").describe_vpcs()  # the test's own call
        instances.find_instances(settings, "us-east-1")
        from gpubox.providers.aws.session import caller_identity

        caller_identity(settings)
    finally:
        aws_session.cache_clear()
    assert recorded(record) == {"ec2:DescribeInstances", "sts:GetCallerIdentity"}
    assert missing_from_table(recorded(record) | {"ec2:CreateFleet"}) == ["ec2:CreateFleet"]


def test_the_administrators_page_names_every_action_and_feature():
    page = (SOURCE.parents[1] / "docs" / "administrators.md").read_text()
    assert [p.iam_action for p in PERMISSIONS if f"`{p.iam_action}`" not in page] == []
    assert [f for f in FEATURES if f"| `{f}` |" not in page] == []


def test_the_policy_passes_iams_grammar_for_every_feature(aws):
    """moto's IAM validates a document's grammar as CreatePolicy does (effects, condition
    operators, ARN forms); it evaluates no condition, so this is the grammar only."""
    import boto3

    iam = boto3.client("iam", region_name="us-east-1")
    for feature in [None, *FEATURES]:
        made = iam.create_policy(PolicyName=f"gpubox-{feature or 'all'}",
                                 PolicyDocument=permissions.policy_json([feature] if feature else None))
        assert made["Policy"]["PolicyName"] == f"gpubox-{feature or 'all'}"
    broken = permissions.policy()
    broken["Statement"][3]["Condition"] = {"StringLik": {"aws:RequestTag/gpubox:kind": "?*"}}
    with pytest.raises(Exception, match="MalformedPolicyDocument"):  # the check can fail
        iam.create_policy(PolicyName="broken", PolicyDocument=json.dumps(broken))
