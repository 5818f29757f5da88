"""Placement groups for moto's EC2: an in-process extension, because moto 5.2 lacks them.

moto 5.2 does not implement CreatePlacementGroup, DescribePlacementGroups or
DeletePlacementGroup, and run_instances drops Placement.GroupName. This adds the three
calls to moto's EC2 layer (its EC2Response; the in-process ThreadedMotoServer serves
them too), makes run_instances check and keep the group, and refuses to delete a group
that a live instance is in, with AWS's error codes. Every answer is checked against
botocore's service model before moto serializes it (no field AWS would not send, enum
values AWS knows), and botocore's own parser reads it on the client side.
It also records each RunInstances' NetworkInterfaces (moto reports every interface as
InterfaceType "interface", so the EFA request is read from here).
"""

from __future__ import annotations

import secrets
from typing import Any

import botocore.session
import pytest

MODEL = botocore.session.get_session().get_service_model("ec2")


def check_against_model(operation: str, answer: dict[str, Any]) -> dict[str, Any]:
    """Raise AssertionError if the answer has a member or an enum value AWS's model lacks."""
    def walk(shape: Any, value: Any, where: str) -> None:
        if shape.type_name == "structure":
            assert isinstance(value, dict), where
            unknown = set(value) - set(shape.members)
            assert not unknown, f"{where}: {sorted(unknown)} not in {shape.name}"
            for key, item in value.items():
                walk(shape.members[key], item, f"{where}.{key}")
        elif shape.type_name == "list":
            assert isinstance(value, list), where
            for item in value:
                walk(shape.member, item, f"{where}[]")
        elif shape.type_name == "string":
            assert isinstance(value, str), where
            if shape.enum:
                assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"

    shape = MODEL.operation_model(operation).output_shape
    if shape is None:
        assert answer == {}, f"{operation} answers nothing"
    else:
        walk(shape, answer, operation)
    return answer


def _groups(backend: Any) -> dict[str, dict[str, Any]]:
    return backend.__dict__.setdefault("_test_placement_groups", {})


def _members(backend: Any, name: str) -> list[Any]:
    return [i for i in backend.all_instances()
            if i._placement.group_name == name and i.state != "terminated"]


@pytest.fixture
def placement_groups(monkeypatch):
    """Patch moto's EC2 layer for the test; returns the list of RunInstances
    NetworkInterfaces requests seen."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    requests: list[list[dict[str, Any]]] = []

    def create_placement_group(self):
        name, strategy = self._get_param("GroupName"), self._get_param("Strategy")
        groups = _groups(self.ec2_backend)
        if name in groups:
            raise EC2ClientError("InvalidPlacementGroup.Duplicate",
                                 f"The Placement Group '{name}' already exists.")
        tags = self._parse_tag_specification("placement-group").get("placement-group", {})
        groups[name] = {
            "GroupName": name, "State": "available", "Strategy": strategy,
            "GroupId": "pg-" + secrets.token_hex(8)[:17],
            "GroupArn": f"arn:aws:ec2:{self.region}:{self.current_account}:placement-group/{name}",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        return ActionResult(check_against_model("CreatePlacementGroup",
                                                {"PlacementGroup": groups[name]}))

    def describe_placement_groups(self):
        names = self._get_param("GroupNames", [])
        filters = self._filters_from_querystring() or {}
        found = list(_groups(self.ec2_backend).values())
        for missing in set(names) - {g["GroupName"] for g in found}:
            raise EC2ClientError("InvalidPlacementGroup.Unknown",
                                 f"The Placement Group '{missing}' is unknown.")
        if names:
            found = [g for g in found if g["GroupName"] in names]
        for key, values in filters.items():
            field = {"group-name": "GroupName", "strategy": "Strategy", "state": "State"}.get(key)
            if field is None:
                raise EC2ClientError("InvalidParameterValue", f"filter {key} (test extension)")
            found = [g for g in found if g[field] in values]
        return ActionResult(check_against_model("DescribePlacementGroups",
                                                {"PlacementGroups": found}))

    def delete_placement_group(self):
        name = self._get_param("GroupName")
        groups = _groups(self.ec2_backend)
        if name not in groups:
            raise EC2ClientError("InvalidPlacementGroup.Unknown",
                                 f"The Placement Group '{name}' is unknown.")
        if _members(self.ec2_backend, name):
            raise EC2ClientError("InvalidPlacementGroup.InUse",
                                 f"The placement group '{name}' is in use.")
        del groups[name]
        return ActionResult(check_against_model("DeletePlacementGroup", {}))

    original_run = EC2Response.run_instances

    def run_instances(self):
        name = self._get_param("Placement.GroupName")
        if name and name not in _groups(self.ec2_backend):
            raise EC2ClientError("InvalidPlacementGroup.Unknown",
                                 f"The Placement Group '{name}' is unknown.")
        requests.append(self._get_param("NetworkInterfaces", []))
        answer = original_run(self)
        for instance in answer.result.instances if name else ():
            instance._placement.group_name = name
        return answer

    monkeypatch.setattr(EC2Response, "create_placement_group", create_placement_group,
                        raising=False)
    monkeypatch.setattr(EC2Response, "describe_placement_groups", describe_placement_groups,
                        raising=False)
    monkeypatch.setattr(EC2Response, "delete_placement_group", delete_placement_group,
                        raising=False)
    monkeypatch.setattr(EC2Response, "run_instances", run_instances)
    return requests
