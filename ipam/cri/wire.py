"""The protobuf wire format of the few CRI messages ``ipamctl gc --cri`` sends and reads,
by hand: the fields it needs, at the field numbers of the CRI API (``runtime.v1``,
``k8s.io/cri-api``'s ``api.proto``). A generated module would need the protobuf runtime,
whose C extension is what raised the self-contained build's glibc floor.

Decoding follows protobuf's rules for a reader: fields in any order, unknown fields
skipped, a repeated or map field's entries wherever they come, the last of a singular
field wins. tests/test_cri_wire.py checks it against the generated classes of the same
messages (tests/cri_api/).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not the message they should be."""


# --- encoding -------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """``n`` (≥ 0, below 2**64) as a base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | VARINT) + varint(value)


def version_request(version: str = "v1") -> bytes:
    """``VersionRequest{version}`` (an empty string is not written: proto3's default)."""
    return field_bytes(1, version.encode()) if version else b""


def status_request(verbose: bool) -> bytes:
    """``StatusRequest{verbose}`` (a false bool is not written: proto3's default)."""
    return field_varint(1, 1) if verbose else b""


def list_pod_sandbox_request() -> bytes:
    """``ListPodSandboxRequest{}``: no filter, every sandbox."""
    return b""


# --- decoding -------------------------------------------------------------------------
def _varint_at(buf: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if at >= len(buf):
            raise WireError("a varint cut short")
        byte = buf[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, at
        shift += 7
        if shift >= 70:
            raise WireError("a varint longer than ten bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(number, wire type, value)`` of each field of a message, in order: a varint's or
    a fixed field's value as an int, a length-delimited one's as bytes."""
    at = 0
    while at < len(buf):
        key, at = _varint_at(buf, at)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if kind == VARINT:
            value, at = _varint_at(buf, at)
        elif kind == LEN:
            size, at = _varint_at(buf, at)
            if at + size > len(buf):
                raise WireError("field %d cut short" % number)
            value, at = buf[at:at + size], at + size
        elif kind in (I64, I32):
            size = 8 if kind == I64 else 4
            if at + size > len(buf):
                raise WireError("field %d cut short" % number)
            value, at = int.from_bytes(buf[at:at + size], "little"), at + size
        else:  # 3 and 4, the deprecated groups, and 6, 7: in no message of the CRI API
            raise WireError("field %d has wire type %d" % (number, kind))
        yield number, kind, value


def _text(kind: int, value: int | bytes, what: str) -> str:
    if kind != LEN or not isinstance(value, bytes):
        raise WireError("%s is not a string" % what)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("%s is not UTF-8" % what) from None


def _message(kind: int, value: int | bytes, what: str) -> bytes:
    if kind != LEN or not isinstance(value, bytes):
        raise WireError("%s is not a message" % what)
    return value


def _int(kind: int, value: int | bytes, what: str) -> int:
    if kind != VARINT or not isinstance(value, int):
        raise WireError("%s is not a varint" % what)
    return value


def _map_entry(buf: bytes, what: str) -> tuple[str, str]:
    key = value = ""
    for number, kind, v in fields(buf):
        if number == 1:
            key = _text(kind, v, what + " key")
        elif number == 2:
            value = _text(kind, v, what + " value")
    return key, value


class Sandbox(NamedTuple):
    """A ``PodSandbox`` of ``ListPodSandboxResponse``: what gc and its messages use."""

    id: str
    state: int  # 0 SANDBOX_READY, 1 SANDBOX_NOTREADY
    name: str
    namespace: str
    uid: str


def list_pod_sandbox_response(buf: bytes) -> list[Sandbox]:
    """``ListPodSandboxResponse.items`` (field 1): each ``PodSandbox``'s id (1), state (3)
    and metadata (2: name 1, uid 2, namespace 3)."""
    items = []
    for number, kind, value in fields(buf):
        if number != 1:
            continue
        sid, state, name, namespace, uid = "", 0, "", "", ""
        for n, k, v in fields(_message(kind, value, "a sandbox")):
            if n == 1:
                sid = _text(k, v, "a sandbox's id")
            elif n == 3:
                state = _int(k, v, "a sandbox's state")
            elif n == 2:
                for mn, mk, mv in fields(_message(k, v, "a sandbox's metadata")):
                    if mn == 1:
                        name = _text(mk, mv, "a sandbox's name")
                    elif mn == 2:
                        uid = _text(mk, mv, "a sandbox's uid")
                    elif mn == 3:
                        namespace = _text(mk, mv, "a sandbox's namespace")
        items.append(Sandbox(sid, state, name, namespace, uid))
    return items


def status_response_info(buf: bytes) -> dict[str, str]:
    """``StatusResponse.info`` (field 2, ``map<string, string>``): a verbose status's
    details, each value a JSON text."""
    info = {}
    for number, kind, value in fields(buf):
        if number == 2:
            key, text = _map_entry(_message(kind, value, "an info entry"), "an info entry")
            info[key] = text
    return info


class Version(NamedTuple):
    version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


def version_response(buf: bytes) -> Version:
    """``VersionResponse``: its four strings (fields 1 to 4)."""
    got = ["", "", "", ""]
    for number, kind, value in fields(buf):
        if 1 <= number <= 4:
            got[number - 1] = _text(kind, value, "a version")
    return Version(*got)
