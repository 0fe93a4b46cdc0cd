"""ipam/cri/wire.py, the CRI messages encoded and read by hand, against the classes
protobuf generates from the same .proto (tests/cri_api/): what protobuf writes, ours
reads; what ours writes, protobuf reads the same."""
import random

import pytest
from cri_api import api_pb2 as api

from ipam.cri import wire


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, 2**64 - 1])
def test_a_varint_reads_back(n):
    assert wire._varint_at(wire.varint(n), 0) == (n, len(wire.varint(n)))


@pytest.mark.parametrize("version", ["v1", "", "x" * 200])
def test_the_version_request_is_protobufs(version):
    assert wire.version_request(version) == api.VersionRequest(
        version=version).SerializeToString()


@pytest.mark.parametrize("verbose", [True, False])
def test_the_status_request_is_protobufs(verbose):
    assert wire.status_request(verbose) == api.StatusRequest(
        verbose=verbose).SerializeToString()


def test_the_list_request_is_protobufs():
    assert wire.list_pod_sandbox_request() == api.ListPodSandboxRequest().SerializeToString()


def _text(rng, n=12):
    return "".join(rng.choice("abcé-/\u4e2d0") for _ in range(rng.randrange(n)))


def test_sandboxes_read_as_protobuf_wrote_them():
    rng = random.Random(7)
    for _ in range(50):
        items = [api.PodSandbox(
            id=_text(rng, 70), state=rng.choice([0, 1]),
            created_at=rng.choice([0, -1, 2**62, rng.randrange(-2**63, 2**63)]),
            metadata=api.PodSandboxMetadata(name=_text(rng), uid=_text(rng),
                                            namespace=_text(rng),
                                            attempt=rng.randrange(2**32)),
            labels={_text(rng): _text(rng) for _ in range(rng.randrange(4))},
            annotations={_text(rng): _text(rng) for _ in range(rng.randrange(4))})
            for _ in range(rng.randrange(6))]
        raw = api.ListPodSandboxResponse(items=items).SerializeToString()
        assert wire.list_pod_sandbox_response(raw) == [
            wire.Sandbox(s.id, s.state, s.metadata.name, s.metadata.namespace,
                         s.metadata.uid) for s in items]


def test_fields_it_does_not_know_are_skipped():
    """A newer runtime's fields (any wire type) between the known ones change nothing."""
    sandbox = api.PodSandbox(id="abc", state=1,
                             metadata=api.PodSandboxMetadata(name="web"))
    raw = sandbox.SerializeToString()
    unknown = (wire.varint(9 << 3 | wire.I64) + (7).to_bytes(8, "little")
               + wire.varint(10 << 3 | wire.I32) + (7).to_bytes(4, "little")
               + wire.field_varint(11, 2**40) + wire.field_bytes(12, b"\xff\x00"))
    listed = wire.field_bytes(1, unknown + raw + unknown) + wire.field_bytes(99, b"x")
    assert api.ListPodSandboxResponse.FromString(listed).items[0].id == "abc"
    assert wire.list_pod_sandbox_response(listed) == [wire.Sandbox("abc", 1, "web", "", "")]


def test_the_status_info_reads_as_protobuf_wrote_it():
    info = {"config": '{"x": 1}', "cniconfig": '{"Networks": []}', "": "", "é": "\u4e2d"}
    raw = api.StatusResponse(
        status=api.RuntimeStatus(conditions=[
            api.RuntimeCondition(type="RuntimeReady", status=True, reason="r",
                                 message="m")]), info=info).SerializeToString()
    assert wire.status_response_info(raw) == info


def test_the_version_reads_as_protobuf_wrote_it():
    raw = api.VersionResponse(version="0.1.0", runtime_name="containerd",
                              runtime_version="1.6.20",
                              runtime_api_version="v1").SerializeToString()
    assert wire.version_response(raw) == ("0.1.0", "containerd", "1.6.20", "v1")


@pytest.mark.parametrize("raw", [
    b"\x0a", b"\x0a\x05abc", b"\x0a\x03\x0a\x05ab", b"\x80", b"\xff" * 11,
    b"\x0b", b"\x00\x01", b"\x0a\x02\xff\xfe", b"\x08\x01",
    b"\x0a\x03\x1a\x01\x00"])
def test_what_is_not_a_list_response_is_a_wire_error(raw):
    """Cut short, an overlong varint, a group, field 0, bad UTF-8, a varint where a
    message or string belongs, a string where a varint belongs."""
    with pytest.raises(wire.WireError):
        wire.list_pod_sandbox_response(raw)
