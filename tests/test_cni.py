"""The CNI protocol layer: skel's checks, their order, codes and messages
(containernetworking/cni, pkg/skel/skel.go; the CNI spec, Section 2: Execution Protocol,
and Section 5: Result Types, Error)."""
import io
import json

import pytest
from helpers import cni_env, run_inprocess

from ipam.cni import main

GOOD = {"cniVersion": "1.0.0", "name": "mynet", "ipam": {"subnet": "10.1.2.0/24"}}


def run_env(env, stdin=b"{}"):
    out = io.StringIO()
    status = main(env, io.BytesIO(stdin), out)
    return status, (json.loads(out.getvalue()) if out.getvalue() else None)


@pytest.mark.parametrize("command,drop,missing", [
    ("ADD", ["CNI_NETNS"], "CNI_NETNS"),
    ("ADD", ["CNI_NETNS", "CNI_PATH"], "CNI_NETNS,CNI_PATH"),
    ("CHECK", ["CNI_CONTAINERID", "CNI_IFNAME"], "CNI_CONTAINERID,CNI_IFNAME"),
    ("DEL", ["CNI_PATH"], "CNI_PATH"),
    ("GC", ["CNI_PATH"], "CNI_PATH"),
])
def test_missing_env(command, drop, missing):
    env = cni_env(command)
    for d in drop:
        del env[d]
    status, err = run_env(env, json.dumps(GOOD).encode())
    assert status == 1 and err == {"code": 4, "msg": "required env variables [%s] missing"
                                   % missing}


def test_del_does_not_need_netns(data_dir, netconf):
    assert run_inprocess("DEL", netconf({"subnet": "10.1.2.0/24"}), netns=None).status == 0


def test_no_command_prints_about_to_stderr(capsys):
    status, out = run_env({})
    assert status == 0 and out is None
    assert "CNI protocol versions supported: 0.1.0, 0.2.0" in capsys.readouterr().err


def test_version_ignores_stdin():
    out = io.StringIO()
    assert main({"CNI_COMMAND": "VERSION"}, io.BytesIO(b"garbage"), out) == 0
    assert json.loads(out.getvalue())["supportedVersions"][-1] == "1.1.0"


@pytest.mark.parametrize("kw,code,msg,details", [
    ({"container_id": "a/b"}, 4, "invalid characters in containerID", "a/b"),
    ({"container_id": "   dummy "}, 4, "invalid characters in containerID", "   dummy "),
    ({"container_id": "a\n"}, 4, "invalid characters in containerID", "a\n"),
    ({"ifname": "a" * 16}, 4, "interface name is too long",
     "interface name should be less than 16 characters"),
    ({"ifname": ".."}, 4, "interface name is . or ..", None),
    ({"ifname": "a/b"}, 4, "interface name contains / or : or whitespace characters", None),
    ({"ifname": "a b"}, 4, "interface name contains / or : or whitespace characters", None),
    ({"ifname": "a:b"}, 4, "interface name contains / or : or whitespace characters", None),
])
def test_identity_checks(kw, code, msg, details):
    env = cni_env("ADD", **kw)
    status, err = run_env(env, json.dumps(GOOD).encode())
    expected = {"code": code, "msg": msg}
    if details:
        expected["details"] = details
    assert status == 1 and err == expected


@pytest.mark.parametrize("stdin,code,msg", [
    (b"", 6, "error unmarshall network config: "),
    (b"nope", 6, "error unmarshall network config: "),
    (b"[1]", 6, "error unmarshall network config: json: cannot unmarshal array"),
    (b'{"name": 5}', 6, "error unmarshall network config: "),
    (b"{}", 7, "missing network name"),
    (b'{"name": ""}', 7, "missing network name"),
    (b'{"name": "../esc"}', 7, "invalid characters found in network name"),
    (b'{"name": "a/b"}', 7, "invalid characters found in network name"),
    (b'{"name": "n", "cniVersion": "0.5.0"}', 1, "incompatible CNI versions"),
    (b'{"name": "n", "cniVersion": "abc"}', 1, "incompatible CNI versions"),
    (b'{"name": "n", "cniVersion": 3}', 6, "json: cannot unmarshal number"),
    (b"[" * 100000 + b"]" * 100000, 6, "error unmarshall network config: "),
])
def test_stdin_checks(stdin, code, msg):
    status, err = run_env(cni_env("ADD"), stdin)
    assert status == 1 and err["code"] == code and err["msg"].startswith(msg)


def test_version_error_details():
    status, err = run_env(cni_env("ADD"), b'{"name": "n", "cniVersion": "0.5.0"}')
    assert err["details"] == ('config is "0.5.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" '
                              '"0.3.1" "0.4.0" "1.0.0" "1.1.0"]')


def test_empty_env_values_count_as_missing():
    env = cni_env("ADD", ifname="")
    assert run_env(env, json.dumps(GOOD).encode())[1] == {
        "code": 4, "msg": "required env variables [CNI_IFNAME] missing"}


def test_unknown_command():
    status, err = run_env(cni_env("FOO"), json.dumps(GOOD).encode())
    assert err == {"code": 4, "msg": "unknown CNI_COMMAND: FOO"}
    env = cni_env("FOO")
    del env["CNI_CONTAINERID"]
    assert run_env(env, json.dumps(GOOD).encode())[1] == {"code": 3, "msg": "missing containerID"}


@pytest.mark.parametrize("command,version,msg", [
    ("CHECK", "0.3.1", "config version does not allow CHECK"),
    ("CHECK", "", "config version does not allow CHECK"),
    ("GC", "1.0.0", "config version does not allow GC"),
    ("STATUS", "0.4.0", "config version does not allow STATUS"),
])
def test_command_version_gates(command, version, msg):
    conf = dict(GOOD, cniVersion=version)
    status, err = run_env(cni_env(command), json.dumps(conf).encode())
    assert err == {"code": 1, "msg": msg}


def test_invalid_utf8_and_nul_are_error_objects():
    for stdin in (b'{"name": "n\xff"}', b'{"name": "n\x00"}', b"\x00\x00"):
        status, err = run_env(cni_env("ADD"), stdin)
        assert status == 1 and isinstance(err["code"], int) and isinstance(err["msg"], str)


def test_gc_and_status_need_no_container(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24"}, version="1.1.0")
    conf["cni.dev/valid-attachments"] = []
    for command in ("GC", "STATUS"):
        env = {"CNI_COMMAND": command, "CNI_PATH": "/x"}
        assert run_env(env, json.dumps(conf).encode()) == (0, None)


def test_a_module_gone_mid_call_is_code_5_saying_to_reinstall(data_dir, netconf,
                                                               monkeypatch, capsys):
    """The package upgraded or removed under a running call: a module it imports
    lazily (``ipam.mirror.reconcile``, after Go host-local wrote a lease file) cannot be
    loaded. Not an internal error (999) but code 5, saying what to do. The build's
    own case, a copy removed under its call, is tests/test_dist.py's."""
    import sys

    import ipam.mirror

    conf = netconf({"subnet": "10.1.2.0/24"})
    assert run_inprocess("ADD", conf, container_id="a").status == 0
    (data_dir / "mynet" / "10.1.2.50").write_bytes(b"go-owned\r\neth0")  # foreign
    monkeypatch.delattr(ipam.mirror, "reconcile", raising=False)
    monkeypatch.setitem(sys.modules, "ipam.mirror.reconcile", None)  # its file gone
    out = run_inprocess("ADD", conf, container_id="b")
    assert out.status == 1 and out.json["code"] == 5, out.out
    assert out.json["msg"].startswith(
        "host-local-sqlite: cannot load the plugin's modules (import of ipam.mirror.reconcile "
        "halted; None in sys.modules): this installation changed or is damaged under "
        "this call; reinstall it, then run 'ipamctl install-plugin' again"), out.json
    assert "internal error" not in capsys.readouterr().err
    monkeypatch.undo()
    assert run_inprocess("ADD", conf, container_id="b").status == 0  # the next call
