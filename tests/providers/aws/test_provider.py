"""AwsProvider against moto: what launch makes, the way in, and the box's whole life."""

from __future__ import annotations

import http.server
import stat
import threading

import pytest

from gpubox.errors import GpuboxError, InvalidInput
from gpubox.providers.base import BoxSpec, BoxState
from tests.providers.aws.conftest import plain_region

SSH_FROM = "203.0.113.7/32"


def spec(name: str = "box1", **kw) -> BoxSpec:
    values = {"type": "g4dn.xlarge", "ssh_from": SSH_FROM, "disk_gb": 80}
    values.update(kw)
    return BoxSpec(name=name, provider="aws", **values)


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def instance(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def gpubox_groups(ec2) -> list[dict]:
    return [
        g for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"].startswith("gpubox-")
    ]


def test_launch_tags_instance_and_volume_and_sizes_an_encrypted_gp3_disk(provider, ec2):
    box = provider.launch(spec())
    inst = instance(ec2, box.id)
    assert tags(inst)["gpubox:box"] == "box1"
    assert tags(inst)["gpubox:kind"] == "instance"
    assert tags(inst)["gpubox:owner"].startswith("arn:aws:")
    root = next(m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"])
    assert root["Ebs"]["DeleteOnTermination"] is True
    volume = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (80, "gp3", True)
    assert tags(volume)["gpubox:box"] == "box1"
    assert tags(volume)["gpubox:kind"] == "volume"
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    behaviour = ec2.describe_instance_attribute(
        InstanceId=box.id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    assert (box.state, box.type, box.region, box.disk_gb) == (
        BoxState.RUNNING, "g4dn.xlarge", "us-east-1", 80,
    )
    assert box.address == inst["PublicIpAddress"]
    assert box.price_per_hour == pytest.approx(0.526)  # the snapshot: moto has no Price List API
    assert box.image_id == provider_image(provider, "dlami")


def provider_image(provider, alias):
    from tests.providers.aws.moto_seed import image_id

    return image_id(alias, "x86_64", "us-east-1")


def test_launch_admits_ssh_from_the_given_cidr_only(provider, ec2):
    box = provider.launch(spec(ssh_from="198.51.100.0/24"))
    (group,) = gpubox_groups(ec2)
    assert group["GroupId"] == box.get("sg_id")
    assert tags(group)["gpubox:kind"] == "security-group"
    rules = [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
             for p in group["IpPermissions"]]
    assert rules == [("tcp", 22, 22, ["198.51.100.0/24"])]


@pytest.fixture
def address_server():
    """A local stand-in for checkip: answers every GET with one address."""

    answer = ["192.0.2.44"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = f"{answer[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", answer
    server.shutdown()
    server.server_close()


def test_launch_admits_the_detected_public_address_as_a_32(aws, settings, address_server, ec2):
    from dataclasses import replace

    from gpubox.providers.aws import AwsProvider

    url, _ = address_server
    prov = AwsProvider(replace(settings, public_ip_url=url), region_chooser=plain_region)
    prov.launch(spec(ssh_from=None))
    (group,) = gpubox_groups(ec2)
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["192.0.2.44/32"]


def ssh_cidrs(ec2) -> list[str]:
    (group,) = gpubox_groups(ec2)
    return sorted(r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"])


def test_start_moves_the_detected_address_rule_to_todays_address(
    aws, settings, address_server, ec2
):
    from dataclasses import replace

    from gpubox.providers.aws import AwsProvider

    url, answer = address_server
    prov = AwsProvider(replace(settings, public_ip_url=url), region_chooser=plain_region)
    prov.wait_delay = 0.01
    box = prov.stop(prov.launch(spec(ssh_from=None)))
    answer[0] = "198.51.100.9"
    prov.start(box)
    assert ssh_cidrs(ec2) == ["198.51.100.9/32"]


def test_start_keeps_an_explicit_ssh_from_rule(aws, settings, address_server, ec2):
    from dataclasses import replace

    from gpubox.providers.aws import AwsProvider

    url, _ = address_server
    prov = AwsProvider(replace(settings, public_ip_url=url), region_chooser=plain_region)
    prov.wait_delay = 0.01
    box = prov.stop(prov.launch(spec(ssh_from="198.51.100.0/24")))
    prov.start(box)
    assert ssh_cidrs(ec2) == ["198.51.100.0/24"]


def test_no_detected_address_and_no_flag_is_an_error_and_makes_nothing(provider, ec2, settings):
    with pytest.raises(InvalidInput) as caught:
        provider.launch(spec(ssh_from=None))
    assert "--ssh-from" in caught.value.hint
    assert gpubox_groups(ec2) == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_instances()["Reservations"] == []
    assert not (settings.keys_dir / "box1.pem").exists()


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.1/24", "not-an-address"])
def test_bad_ssh_from_is_refused_before_anything_is_made(provider, ec2, cidr):
    with pytest.raises(InvalidInput):
        provider.launch(spec(ssh_from=cidr))
    assert gpubox_groups(ec2) == []


def test_private_key_is_written_0600_and_the_key_pair_is_ed25519(provider, ec2, settings):
    box = provider.launch(spec())
    path = settings.keys_dir / "box1.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in path.read_text()
    (pair,) = ec2.describe_key_pairs()["KeyPairs"]
    assert (pair["KeyName"], pair["KeyType"]) == ("gpubox-box1", "ed25519")
    assert tags(pair)["gpubox:kind"] == "key-pair"
    assert provider.endpoint(box).key_path == path
    assert all("PRIVATE KEY" not in m for m in provider.messages)


def test_loose_key_file_permissions_are_refused_with_the_chmod_fix(provider, settings):
    box = provider.launch(spec())
    path = settings.keys_dir / "box1.pem"
    path.chmod(0o644)
    with pytest.raises(GpuboxError) as caught:
        provider.endpoint(box)
    assert caught.value.hint == f"chmod 600 {path}"


def test_endpoint_without_the_private_key_says_so(provider, settings):
    box = provider.launch(spec())
    (settings.keys_dir / "box1.pem").unlink()
    with pytest.raises(GpuboxError, match="private key of box 'box1' is missing"):
        provider.endpoint(box)


def test_key_pair_on_aws_without_its_local_file_is_explained_and_nothing_deleted(
    provider, ec2, settings
):
    ec2.create_key_pair(KeyName="gpubox-box1", KeyType="ed25519")
    with pytest.raises(GpuboxError) as caught:
        provider.launch(spec())
    assert "cannot be downloaded again" in caught.value.message
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["gpubox-box1"]
    assert ec2.describe_instances()["Reservations"] == []


def test_second_launch_returns_the_same_instance(provider, ec2):
    first = provider.launch(spec())
    second = provider.launch(spec())
    assert second.id == first.id
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert ids == [first.id]


def test_launching_a_stopped_box_starts_it_instead_of_making_another(provider, ec2):
    first = provider.stop(provider.launch(spec()))
    assert first.state is BoxState.STOPPED
    again = provider.launch(spec())
    assert (again.id, again.state) == (first.id, BoxState.RUNNING)


def test_stop_start_terminate_and_cleanup(provider, ec2, settings):
    box = provider.launch(spec())
    stopped = provider.stop(box)
    assert stopped.state is BoxState.STOPPED
    assert instance(ec2, box.id)["State"]["Name"] == "stopped"
    assert provider.stop(stopped).state is BoxState.STOPPED  # stopping twice is harmless
    started = provider.start(stopped)
    assert started.state is BoxState.RUNNING and started.launched_at
    assert provider.find("box1").id == box.id
    provider.terminate(started)
    assert instance(ec2, box.id)["State"]["Name"] == "terminated"
    assert gpubox_groups(ec2) == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert not (settings.keys_dir / "box1.pem").exists()
    assert provider.find("box1") is None
    with pytest.raises(GpuboxError, match="terminated"):
        provider.start(started)


def test_terminate_keeps_a_key_pair_another_instance_still_uses(provider, ec2, settings):
    box = provider.launch(spec())
    # A second instance (made outside gpubox) with the same key pair.
    other = ec2.run_instances(
        ImageId=box.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
        KeyName="gpubox-box1",
    )["Instances"][0]["InstanceId"]
    provider.terminate(box)
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["gpubox-box1"]
    assert (settings.keys_dir / "box1.pem").exists()
    assert gpubox_groups(ec2) == []
    assert instance(ec2, other)["State"]["Name"] == "running"


def test_spot_launch_is_a_spot_box(provider, ec2):
    box = provider.launch(spec(spot=True, max_price=0.5))
    assert box.spot is True
    assert instance(ec2, box.id).get("InstanceLifecycle") == "spot"
    provider.terminate(box)
    assert instance(ec2, box.id)["State"]["Name"] == "terminated"


def test_list_finds_boxes_in_every_region_gpubox_used(provider, ec2):
    from tests.providers.aws.moto_seed import seed_images

    seed_images("eu-west-1")
    provider.launch(spec("east"))
    provider.launch(spec("west", region="eu-west-1"))
    boxes = {b.name: b.region for b in provider.list()}
    assert boxes == {"east": "us-east-1", "west": "eu-west-1"}
    from gpubox.providers.aws.session import used_regions

    assert used_regions(provider.state) == ["eu-west-1", "us-east-1"]


def test_endpoint_pins_host_keys_from_the_console_and_honours_overrides(
    aws, settings, monkeypatch
):
    from dataclasses import replace

    import moto.ec2.responses.general as general

    from gpubox.providers.aws import AwsProvider
    from tests.providers.aws.moto_seed import CONSOLE_WITH_KEYS, HOST_KEYS

    monkeypatch.setattr(general, "SAMPLE_CONSOLE_OUTPUT", CONSOLE_WITH_KEYS)
    tuned = replace(settings, ssh_address="127.0.0.1:2222", ssh_jump="jump.example:22")
    prov = AwsProvider(tuned, region_chooser=plain_region)
    box = prov.launch(spec())
    end = prov.endpoint(box)
    assert (end.host, end.port, end.user, end.proxy_jump) == (
        "127.0.0.1", 2222, "ubuntu", "jump.example:22",
    )
    assert end.host_keys == HOST_KEYS


def test_stopped_box_storage_cost_per_month(provider):
    from gpubox.providers.aws import monthly_storage_cost

    box = provider.stop(provider.launch(spec()))
    assert monthly_storage_cost(box) == pytest.approx(80 * 0.08)


def test_launch_waits_while_the_instance_is_pending(provider, monkeypatch):
    """moto says "running" at once; real EC2 says "pending" for a while. Hold the instance
    pending for its first looks, so the waiter's slow path runs."""
    from moto.ec2.models import EC2Backend

    original_run = EC2Backend.run_instances
    original_get = EC2Backend.get_reservations_by_instance_ids
    looks = []

    def run_pending(self, *args, **kwargs):
        reservation = original_run(self, *args, **kwargs)
        for inst in reservation.instances:
            inst._state.name, inst._state.code = "pending", 0
        return reservation

    def get_slowly(self, instance_ids, filters=None):
        found = original_get(self, instance_ids, filters=filters)
        looks.append(instance_ids)
        for reservation in found:
            for inst in reservation.instances:
                if len(looks) >= 4 and inst._state.name == "pending":
                    inst._state.name, inst._state.code = "running", 16
        return found

    monkeypatch.setattr(EC2Backend, "run_instances", run_pending)
    monkeypatch.setattr(EC2Backend, "get_reservations_by_instance_ids", get_slowly)
    box = provider.launch(spec())
    assert box.state is BoxState.RUNNING
    assert len(looks) >= 4
    assert any("waiting for running" in m for m in provider.messages)


def test_an_existing_local_key_is_imported_when_aws_lacks_the_key_pair(provider, ec2, settings):
    import subprocess

    path = settings.keys_dir / "box1.pem"
    settings.keys_dir.mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    public = (settings.keys_dir / "box1.pem.pub").read_text().split()[:2]
    before = path.read_text()
    box = provider.launch(spec())
    (pair,) = ec2.describe_key_pairs(KeyNames=["gpubox-box1"], IncludePublicKey=True)["KeyPairs"]
    assert pair["PublicKey"].split()[:2] == public
    assert path.read_text() == before
    assert instance(ec2, box.id)["KeyName"] == "gpubox-box1"


def test_a_spot_box_stopped_by_aws_says_it_was_interrupted(provider, ec2):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    box = provider.launch(spec(spot=True, max_price=0.5))
    ec2.stop_instances(InstanceIds=[box.id])
    # AWS, not the user, stopped it: the reason EC2 reports for a spot interruption.
    # moto never interrupts by itself, so the test sets the reason in moto's backend.
    moto_instance = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_instance(box.id)
    moto_instance.state_reason = StateReason(
        "Server.SpotInstanceShutdown: Stopped by the spot service", "Server.SpotInstanceShutdown"
    )
    found = provider.find("box1")
    assert found.state.value == "stopped"
    assert found.get("interrupted") == "stop"
    plain = provider.launch(spec("plain"))
    ec2.stop_instances(InstanceIds=[plain.id])
    assert provider.find("plain").get("interrupted") is None


def test_a_stopped_box_carries_when_it_stopped(provider, ec2):
    import time as _time

    from gpubox.providers.aws.instances import transition_time

    assert transition_time("User initiated (2026-11-27 03:04:05 GMT)") == 1795748645.0
    assert transition_time("") is None
    box = provider.launch(spec())
    before = _time.time()
    provider.stop(box)
    stopped_at = float(provider.find("box1").get("stopped_at"))
    assert before - 2 <= stopped_at <= _time.time() + 1  # EC2's time stamp has whole seconds


def test_a_second_instance_of_a_name_made_by_a_lost_race_is_terminated_at_once(provider, ec2):
    import time

    from gpubox.providers.aws import races

    first = provider.launch(spec())
    time.sleep(1.1)  # EC2's launch times are to the second: the other one is newer
    second = provider._launch(spec())  # as a racing `up` that looked before `first` existed
    kept = races.keep_oldest(provider, second)
    assert kept.id == first.id
    assert instance(ec2, second.id)["State"]["Name"] in ("shutting-down", "terminated")
    assert any("terminating the second instance" in m for m in provider.messages)
    assert races.keep_oldest(provider, first).id == first.id  # the older one keeps itself


def test_the_client_token_names_the_box_never_the_process(provider, settings):
    from gpubox.providers.aws.instances import client_token

    one = client_token("123456789012", "us-east-1", "box1", "sg-1", "g4dn.xlarge", "us-east-1a")
    assert one == client_token("123456789012", "us-east-1", "box1", "sg-1", "g4dn.xlarge",
                               "us-east-1a")  # fmt: skip
    assert one != client_token("123456789012", "us-east-1", "box1", "sg-2", "g4dn.xlarge",
                               "us-east-1a")  # a new generation after `down`  # fmt: skip
    sent = []
    from gpubox.providers.aws.session import client

    client(settings, "ec2", "us-east-1", purpose="launch").meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(params)
    )
    box = provider.launch(spec())
    provider.terminate(box)
    provider.launch(spec())  # the same box made again: its new group, a new token
    assert len(sent) == 2 and sent[0]["ClientToken"] != sent[1]["ClientToken"]
