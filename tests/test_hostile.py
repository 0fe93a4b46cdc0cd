"""Hostile input: whatever a runtime, or someone who controls a network config or the
environment, hands the plugin, it answers with a result or a CNI error object.

Two parts:

- A property-based test (hypothesis) over generated configs, environments and raw
  stdin, run in-process through :func:`ipam.cni.main`: every input ends in a result or an
  error object whose exit status matches, nothing escapes ``main``, no traceback or
  "internal error" reaches stderr, nothing is written outside ``dataDir``, and no lease
  changes unless the command legitimately touches it.
- Explicit cases, by class: broken stdin, wrong JSON types for every key, path
  traversal, malformed CNI_ARGS, unknown commands, malformed prevResult, unreadable
  resolvConf, and bytes in the environment that are not UTF-8. Each case runs in process
  (:func:`run_checked`: :func:`ipam.cni.main` with the same environment and stdin bytes,
  stderr free of tracebacks), and one case of each class (id ``...-binary``) also runs
  through the installed console script (``helpers.run_plugin``, which asserts the same of
  its stderr): what only a process shows (the interpreter's start-up, the lean hot path's
  imports, stdout's encoding, the environment's bytes) is checked there and by the bug
  tests at the end, which all run the binary.
"""
import contextlib
import fcntl
import io
import json
import os
import random
import shutil
import sqlite3
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from helpers import PLUGIN, VERSIONS, cni_env, run_inprocess, run_plugin
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ipam.cni import main as cni_main
from ipam.cni import valid_name
from ipam.paths import DB_NAME as DB
from ipam.paths import PENDING_PREFIX as PENDING

SEED_SUBNET = "10.1.2.0/24"
MIB = 1024 * 1024


# -- helpers -----------------------------------------------------------------------------
def tree(top, skip=()):
    """Everything under ``top`` (relative path -> bytes, None for a directory, or
    ("link", target)), leaving out the relative paths in ``skip`` and what is below them."""
    out = {}
    for root, dirs, files in os.walk(top):
        rel = os.path.relpath(root, top)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in skip]
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(root, name)
            key = os.path.normpath(os.path.join(rel, name))
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                out[key] = ("link", os.readlink(full))
            elif stat.S_ISDIR(mode):
                out[key] = None
            else:
                with open(full, "rb") as f:
                    out[key] = f.read()
    return out


def lease_rows(db_path):
    """Every lease as (network, ip, range_set, container_id, ifname, allocated_at); the
    ``next_free`` flag and the boot id may change legitimately and are left out."""
    if not os.path.exists(db_path):
        return set()
    con = sqlite3.connect(db_path)
    try:
        return set(con.execute("SELECT network, ip, range_set, container_id, ifname, "
                               "allocated_at FROM leases"))
    finally:
        con.close()


def assert_error_object(outcome, code=None):
    """``outcome`` is exit status 1 with a CNI error object (of ``code``, if given)."""
    obj = outcome.json
    assert outcome.status == 1 and isinstance(obj, dict), outcome
    assert set(obj) <= {"code", "msg", "details"}, outcome
    assert type(obj["code"]) is int and isinstance(obj["msg"], str), outcome
    assert isinstance(obj.get("details", ""), str), outcome
    assert not obj["msg"].startswith("internal error"), outcome
    if code is not None:
        assert obj["code"] == code, outcome


def assert_result_or_error(outcome):
    if outcome.status == 0:
        assert isinstance(outcome.json, dict) and "cniVersion" in outcome.json, outcome
        assert "code" not in outcome.json, outcome
    else:
        assert_error_object(outcome)


def run_raw(command, stdin, env_extra=None, **kw):
    """The console script with an environment that may hold any bytes (str values are
    encoded with surrogateescape, as os.environ decoded them). Returns (status, stdout
    bytes, stderr bytes); asserts no traceback."""
    env = {"PATH": os.environ.get("PATH", "")}
    env.update(cni_env(command, **kw))
    env.update(env_extra or {})
    proc = subprocess.run([PLUGIN], input=stdin, env=env, capture_output=True, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")
    return proc.returncode, proc.stdout, proc.stderr


def assert_utf8_error_object(status, stdout, code):
    text = stdout.decode("utf-8")  # a CNI runtime reads UTF-8 JSON (RFC 8259)
    obj = json.loads(text)
    assert status == 1 and obj["code"] == code and isinstance(obj["msg"], str), text
    assert not obj["msg"].startswith("internal error"), text


def parallel(fn, items, workers=4):
    """Run ``fn`` over ``items`` in a few threads (each call starts one process)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def run_checked(command, conf, **kw):
    """The plugin in process (:func:`helpers.run_inprocess`), checked as the binary's run
    is: nothing on stderr that a traceback or an internal error left, and an answer that
    stdout could write as UTF-8."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out = run_inprocess(command, conf, **kw)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert "internal error" not in err.getvalue(), err.getvalue()
    out.out.encode("utf-8")
    return out


def with_smoke(cases, smoke, ids=str):
    """``(case, run)`` parameters: every case in process, and ``smoke`` (this class's
    representative) once more through the installed binary."""
    return ([pytest.param(c, run_checked, id=ids(c)) for c in cases]
            + [pytest.param(smoke, run_plugin, id=ids(smoke) + "-binary")])


# -- part 1: property-based ----------------------------------------------------------------
P_DATADIR = "@@DATADIR@@"
P_RESOLV = {"@@RESOLV_GOOD@@": "resolv.conf", "@@RESOLV_MISSING@@": "missing.conf",
            "@@RESOLV_DIR@@": "adir", "@@RESOLV_BINARY@@": "binary.conf"}

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.sampled_from(["\ud800", "x\udcff", "\x00", "a\nb", "\u2028", "10.1.2.0/24", "10.1.2.7"]))
# Keys of generated objects have at most 5 characters: none can spell an ipam key such as
# "datadir" or "database", so dataDir stays fixed and the database unset.
JUNK = st.recursive(
    _SCALARS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                              max_size=3),
    max_leaves=6)
_NUMBERS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats())
NOT_STR_JUNK = st.one_of(_NUMBERS, st.lists(JUNK, max_size=3),
                         st.dictionaries(st.text(max_size=5), JUNK, max_size=3))
NOT_OBJECT_JUNK = st.one_of(_NUMBERS, st.text(max_size=5), st.lists(JUNK, max_size=3))

SUBNETS = ["10.1.2.0/24", "10.1.2.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.2.0/28",
           "203.0.113.1/24", "2001:db8::/64", "2001:db8:1::/126", "0.0.0.0/0", "::/0"]
BAD_SUBNETS = ["10.1.2.0/31", "10.1.2.5/32", "::ffff:10.1.2.0/120", "", "10.1.2", "10.1.2.0/33",
               "10.1.2.0/-1", "10.1.2.0/255.255.255.0", " 10.1.2.0/24", "10.01.2.0/24",
               "fe80::/64%eth0", "1.2.3.4/24/5", "\u0661\u0660.1.2.0/24"]
IPS = ["10.1.2.1", "10.1.2.2", "10.1.2.7", "10.1.2.200", "10.1.2.255", "10.1.2.0",
       "10.1.3.9", "2001:db8::7", "::ffff:10.1.2.9", "0.0.0.0", "::", ""]
BAD_IPS = ["10.1.2", "10.1.2.7/24", "fe80::1%eth0", "256.1.2.3", " 10.1.2.7", "10.1.2.7\n"]
REQUESTED = IPS[:-1] + ["10.1.2.9/24", "2001:db8::9/64"]
BAD_REQUESTED = BAD_IPS + ["", "10.1.2.9/33"]
VERSION_VALUES = ["1.1.0"] * 12 + list(VERSIONS)
BAD_VERSIONS = ["", "0.5.0", "1.1", "abc", "1.1.0.0", "01.1.0", "1.1.0 "]
NAMES = ["seed", "other", "net1", "A-b_c.d"]
BAD_NAMES = ["..", ".", "../x", "a/b", "/abs", "", "-x", ".hidden", "n" * 240, "n" * 300,
             "seed\n", "s\u00e9ed"]


def mostly(good, bad, percent=94):
    """``good`` in about ``percent`` of the draws, else ``bad``."""
    return st.integers(0, 99).flatmap(lambda i: good if i < percent else bad)


def good_or_junk(values, percent=93):
    return mostly(st.sampled_from(values), JUNK, percent)


def good_bad_junk(good, bad, percent=92):
    """A good value, a bad value of the right type, or junk of any type."""
    return mostly(st.sampled_from(good), mostly(st.sampled_from(bad), JUNK, 60), percent)


SUBNET = good_bad_junk(SUBNETS, BAD_SUBNETS)
VERSION = good_bad_junk(VERSION_VALUES, BAD_VERSIONS, 94)
IP = good_bad_junk(IPS, BAD_IPS)


@st.composite
def obj(draw, fields, always=None):
    """An object whose keys come from ``fields`` (name -> (strategy, chance in tenths)),
    now and then spelt in capitals (Go matches keys case-insensitively)."""
    out = dict(always or {})
    for key, (strategy, chance) in fields.items():
        if draw(st.integers(0, 9)) < chance:
            if draw(st.integers(0, 9)) == 0:
                key = key.upper()
            out[key] = draw(strategy)
    return out


EXCLUDES = mostly(st.lists(good_bad_junk(["10.1.2.7", "10.1.2.0/30", "10.1.2.0/24",
                                          "2001:db8::/120", "10.1.2.2"],
                                         BAD_IPS + ["nonsense", ""]), max_size=3), JUNK)
RANGE = obj({"subnet": (SUBNET, 9), "rangeStart": (IP, 2), "rangeEnd": (IP, 2),
             "gateway": (IP, 2), "exclude": (EXCLUDES, 2)})
RANGES = mostly(st.lists(mostly(st.lists(mostly(RANGE, JUNK), max_size=3), JUNK), max_size=3),
                JUNK)
INTS = mostly(st.integers(), JUNK)
ROUTE = obj({"dst": (SUBNET, 9), "gw": (IP, 4),
             "mtu": (INTS, 1), "advmss": (INTS, 1), "priority": (INTS, 1),
             "table": (INTS, 1), "scope": (INTS, 1)})
ROUTES = mostly(st.lists(mostly(ROUTE, JUNK), max_size=3), JUNK)
BUSY = mostly(st.sampled_from([0, 0.001, 1, 2.5, 10]), st.one_of(
    st.sampled_from([-1, 10**400, 1e308, 2**63]), st.floats(), st.integers(), JUNK), 80)
RESOLV = mostly(st.sampled_from(sorted(P_RESOLV) + [""]),
                st.one_of(st.sampled_from(["\x00", "/x\ud800"]), NOT_STR_JUNK), 85)
IPAM = obj({"type": (good_or_junk(["host-local", "host-local-sqlite"]), 5),
            "subnet": (SUBNET, 9), "rangeStart": (IP, 1), "rangeEnd": (IP, 1),
            "gateway": (IP, 1),
            "routes": (ROUTES, 3), "ranges": (RANGES, 4), "resolvConf": (RESOLV, 2),
            "exclude": (EXCLUDES, 2), "export": (mostly(st.booleans(), JUNK), 2),
            "adopt": (mostly(st.booleans(), JUNK), 2), "busyTimeout": (BUSY, 2)},
           always={"dataDir": P_DATADIR})
IP_LIST = mostly(st.lists(good_bad_junk(REQUESTED, BAD_REQUESTED), max_size=3), JUNK)
ARGS = mostly(obj({"cni": (mostly(obj({"ips": (IP_LIST, 8)}), JUNK), 8)}), JUNK)
RUNTIME = mostly(obj({"ips": (IP_LIST, 5), "ipRanges": (RANGES, 5), "portMappings": (JUNK, 1)}),
                 JUNK)
PREV_IP = obj({"address": (good_or_junk(["10.1.2.2/24", "10.1.2.3/24", "10.1.2.2",
                                         "2001:db8::2/64", "10.1.2.2/33", "10.9.0.2/24"]), 8),
               "gateway": (IP, 3)})
PREV = mostly(obj({"cniVersion": (VERSION, 5),
                   "ips": (mostly(st.lists(mostly(PREV_IP, JUNK), max_size=3), JUNK), 8)}),
              JUNK)
ATTACHMENT = obj({"containerID": (good_or_junk(["keep", "dummy", "c1"]), 9),
                  "ifname": (good_or_junk(["eth0", "net1"]), 9)})
ATTACHMENTS = mostly(st.lists(mostly(ATTACHMENT, JUNK), max_size=3), JUNK)
NAME = mostly(st.sampled_from(NAMES), mostly(st.sampled_from(BAD_NAMES), JUNK, 70), 92)
# cniVersion, name and ipam are always there; JUNK's null stands for "unset"
CONFIG = obj({"cniVersion": (VERSION, 10), "name": (NAME, 10),
              "type": (good_or_junk(["bridge", "ipvlan"]), 3),
              # a junk object for ipam would have no dataDir: it must not be an object
              "ipam": (mostly(IPAM, NOT_OBJECT_JUNK, 95), 10),
              "args": (ARGS, 2), "runtimeConfig": (RUNTIME, 2), "prevResult": (PREV, 3),
              "cni.dev/valid-attachments": (ATTACHMENTS, 6),
              "cni.dev/attachments": (ATTACHMENTS, 1)})
# No "ipam" can come from JUNK's 5-character keys... except "ipam" itself; keep such
# objects out so that no config escapes the fixed dataDir.
TOP = mostly(CONFIG, st.one_of(NOT_OBJECT_JUNK, st.dictionaries(
    st.text(max_size=5).filter(lambda k: k.lower() != "ipam"), JUNK, max_size=3)), 95)

# Environment values as os.environ decodes them: any bytes but NUL, surrogateescape.
ENV_TEXT = st.binary(max_size=12).map(
    lambda b: b.replace(b"\x00", b"").decode("utf-8", "surrogateescape"))
ENV = st.fixed_dictionaries({
    "CNI_COMMAND": mostly(st.sampled_from(["ADD"] * 4 + ["DEL", "DEL", "CHECK", "GC", "STATUS"]),
                          st.one_of(st.sampled_from(["VERSION", "", "add", "FOO", "ADD ",
                                                     "DEL\n"]), ENV_TEXT, st.none()), 95),
    "CNI_CONTAINERID": mostly(st.sampled_from(["keep", "dummy", "c1"]), st.one_of(
        st.sampled_from(["../../etc", "a/b", "", ".", "x" * 300]), ENV_TEXT, st.none()), 95),
    "CNI_IFNAME": mostly(st.sampled_from(["eth0", "eth0", "net1"]), st.one_of(
        st.sampled_from(["", "..", "a/b", "a:b", "a b", "a" * 16, "eth0\n"]), ENV_TEXT,
        st.none()), 95),
    "CNI_NETNS": mostly(st.just("/some/where"), st.sampled_from(["", None, "../../x"]), 97),
    "CNI_ARGS": mostly(st.none(), st.one_of(st.sampled_from([
        "", "IP=10.1.2.9", "IP=10.1.2.2", "IP=10.1.2.9/24", "IP=2001:db8::9",
        "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.10", "IgnoreUnknown=true;a=b", "IP", "=",
        ";", "IP=10.1.2.9;", "a=b=c", "K8S_POD_NAME=x", "IgnoreUnknown=maybe", "IP=junk",
        "IP=10.1.2.9=1"]), ENV_TEXT), 88),
    "CNI_PATH": mostly(st.just("/opt/cni/bin"), st.sampled_from(["", None]), 97),
}).map(lambda env: {k: v for k, v in env.items() if v is not None})
STDIN = mostly(st.tuples(st.just("json"), TOP), st.one_of(
    st.tuples(st.just("raw"), st.binary(max_size=64)),
    st.tuples(st.just("cut"), TOP, st.integers(0, 300), st.binary(max_size=4))), 92)


class World:
    """One tmp_path for every example: a seeded dataDir template, copied into a fresh
    ``work/data`` before each example, beside files the plugin must never touch."""

    def __init__(self, root):
        self.root = root
        self.work = root / "work"
        self.data = self.work / "data"
        self.sibling = self.work / "sibling"  # a sibling of dataDir, full of files
        self.cwd = self.work / "cwd"  # the plugin's working directory: relative paths
        self.template = root / "template"
        for d in (self.data, self.sibling / "adir", self.cwd):
            d.mkdir(parents=True)
        (self.sibling / "resolv.conf").write_text(
            "nameserver 192.0.2.53\nsearch example.com\noptions ndots:2\n")
        (self.sibling / "binary.conf").write_bytes(bytes(range(256)) * 8 + b"nameserver \xff")
        (self.sibling / "victim").write_text("do not touch\n")
        (root / "outside.txt").write_text("do not touch either\n")
        self.db = str(self.data / DB)
        for net, subnet in (("seed", SEED_SUBNET), ("other", "10.9.0.0/24")):
            out = run_inprocess("ADD", self.seed_config(net, subnet), container_id="keep",
                                ifname="eth0")
            assert out.status == 0, out
        shutil.copytree(self.data, self.template, symlinks=True)
        self.seed_rows = lease_rows(self.db)
        self.keep = {r for r in self.seed_rows if r[0] == "seed" and r[3] == "keep"}
        assert len(self.seed_rows) == 2 and len(self.keep) == 1, self.seed_rows
        self.outside = tree(self.root, skip={"work/data"})
        self.var_lib = os.path.lexists("/var/lib/cni/networks")

    def seed_config(self, name, subnet):
        return {"cniVersion": "1.1.0", "name": name,
                "ipam": {"type": "host-local-sqlite", "subnet": subnet,
                         "dataDir": str(self.data)}}

    def reset(self):
        shutil.rmtree(self.data)
        shutil.copytree(self.template, self.data, symlinks=True)

    def materialize(self, value):
        """Put the real paths in place of the placeholders."""
        if isinstance(value, dict):
            return {k: self.materialize(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.materialize(v) for v in value]
        if value == P_DATADIR:
            return str(self.data)
        if isinstance(value, str) and value in P_RESOLV:
            return str(self.sibling / P_RESOLV[value])
        return value


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = World(tmp_path)
    monkeypatch.chdir(w.cwd)
    return w


def _stdin_bytes(world, stdin):
    kind = stdin[0]
    if kind == "raw":
        return stdin[1], None
    conf = world.materialize(stdin[1])
    text = json.dumps(conf).encode()
    if kind == "cut":
        return text[:stdin[2]] + stdin[3], None
    return text, conf


def _result_addresses(result):
    if "ips" in result:
        return [ip["address"].split("/")[0] for ip in result["ips"]]
    return [result[k]["ip"].split("/")[0] for k in ("ip4", "ip6") if k in result]


@settings(max_examples=250, derandomize=True, database=None, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                 HealthCheck.large_base_example])
@given(env=ENV, stdin=STDIN)
def test_any_input_gets_a_result_or_an_error_object(world, env, stdin):
    world.reset()
    data, conf = _stdin_bytes(world, stdin)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cni_main(dict(env), io.BytesIO(data), out)  # must return, never raise
    out, err = out.getvalue(), err.getvalue()
    command = env.get("CNI_COMMAND", "")

    # The answer: the real process writes it to a pipe as UTF-8.
    assert "Traceback" not in err and "internal error" not in err, err
    out.encode("utf-8")
    assert status in (0, 1), (status, out)
    if status == 0 and out == "":
        assert command in ("DEL", "CHECK", "GC", "STATUS", ""), (command, out)
    elif status == 0:
        answer = json.loads(out)
        assert command in ("ADD", "VERSION"), (command, out)
        assert isinstance(answer, dict) and "code" not in answer and "cniVersion" in answer
    else:
        answer = json.loads(out)
        assert isinstance(answer, dict) and set(answer) <= {"code", "msg", "details"}, out
        assert type(answer["code"]) is int and isinstance(answer["msg"], str), out
        assert isinstance(answer.get("details", ""), str), out
        assert not answer["msg"].startswith("internal error"), out
    event("%s: %s" % (command if command in ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
                      else "other", "code %d" % answer["code"] if status else "ok"))

    # Nothing written outside dataDir (its sibling, the template, the working directory,
    # the default /var/lib/cni/networks); inside it only ours and valid network names.
    assert tree(world.root, skip={"work/data"}) == world.outside
    assert os.path.lexists("/var/lib/cni/networks") == world.var_lib
    for entry in os.listdir(world.data):
        path = world.data / entry
        if path.is_dir() and not path.is_symlink():
            assert valid_name(entry), entry
        else:
            assert entry in (DB, DB + "-wal", DB + "-shm", DB + ".lock") or (
                entry.startswith(PENDING) and valid_name(entry[len(PENDING):])), entry

    # Leases change only as the command allows.
    rows = lease_rows(world.db)
    lowered = {k.lower(): v for k, v in conf.items()} if isinstance(conf, dict) else {}
    network = lowered.get("name")
    cid, ifname = env.get("CNI_CONTAINERID"), env.get("CNI_IFNAME")
    if status == 1 and command != "GC":  # GC can commit, then fail on the mirror
        assert rows == world.seed_rows, (command, out)
    for row in world.seed_rows - rows:
        assert row[0] == network and (
            command == "GC" or command == "DEL" and row[3] == cid and row[4] in (ifname, None)
        ), ("released", row, command, out)
    for row in rows - world.seed_rows:
        assert command == "ADD" and status == 0 and row[0] == network, ("added", row, out)
        assert (row[3], row[4]) == (cid, ifname), ("added", row, out)
    if not (command in ("DEL", "GC") and network == "seed"):
        assert world.keep <= rows, (command, out)
    if command == "ADD" and status == 0:
        mine = {r[1] for r in rows if (r[0], r[3], r[4]) == (network, cid, ifname)}
        assert set(_result_addresses(json.loads(out))) <= mine, out


# -- part 2: explicit cases through the real binary ----------------------------------------
def _valid(data_dir, **ipam):
    return {"cniVersion": "1.1.0", "name": "mynet", "type": "bridge",
            "ipam": dict({"type": "host-local-sqlite", "subnet": SEED_SUBNET,
                          "dataDir": str(data_dir)}, **ipam)}


def _dump(obj):
    return json.dumps(obj).encode()


_STDIN_CASES = {
    # id: (stdin built from a valid config's bytes, expected code)
    "empty": (lambda v: b"", 6),
    "whitespace": (lambda v: b" \n\t\r ", 6),
    "not json": (lambda v: b"hello", 6),
    "array": (lambda v: b"[]", 6),
    "array of the config": (lambda v: b"[" + v + b"]", 6),
    "string": (lambda v: json.dumps(v.decode()).encode(), 6),
    "number": (lambda v: b"42", 6),
    "float": (lambda v: b"-1.5e300", 6),
    "null": (lambda v: b"null", 6),
    "boolean": (lambda v: b"true", 6),
    "NaN": (lambda v: b"NaN", 6),
    "truncated": (lambda v: v[:-7], 6),
    "trailing garbage": (lambda v: v + b" x", 6),
    "two objects": (lambda v: v + v, 6),
    "invalid utf-8 only": (lambda v: b"\xff\xfe\xfd", 6),
    "utf-16": (lambda v: v.decode().encode("utf-16"), 6),
    "utf-8 BOM": (lambda v: b"\xef\xbb\xbf" + v, 6),
    "NUL only": (lambda v: b"\x00", 6),
    "NUL before": (lambda v: b"\x00" + v, 6),
    "NUL after": (lambda v: v + b"\x00", 6),
    # Syntax errors past the first character: see test_json_syntax_errors_are_code_6.
    "raw NUL in a string": (lambda v: v.replace(b'"mynet"', b'"myn\x00et"'), 6),
    "raw newline in a string": (lambda v: v.replace(b'"mynet"', b'"myn\net"'), 6),
    "missing colon": (lambda v: v.replace(b'"name": ', b'"name" '), 6),
    "unquoted key": (lambda v: v.replace(b'"name"', b"name"), 6),
    "bad escape": (lambda v: v.replace(b'"mynet"', b'"my\\qnet"'), 6),
    "trailing comma": (lambda v: v[:-1] + b", }", 6),
    "missing comma": (lambda v: v.replace(b", ", b" ", 1), 6),
    "unterminated string": (lambda v: b'{"name": "mynet', 6),
    "100k brackets": (lambda v: b"[" * 100_000 + b"]" * 100_000, 6),
    "100k objects": (lambda v: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 6),
    "deep value in a valid config": (
        lambda v: v[:-1] + b', "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 6),
    "10 MB of garbage": (lambda v: random.Random(0).randbytes(10 * MIB), 6),
    "10 MB of letters": (lambda v: b"x" * (10 * MIB), 6),
    "more than 64 MiB": (lambda v: b" " * (64 * MIB) + v, 5),
}


# Through the binary as well: a syntax error past the first character (the lean hot path
# never imports json.decoder: see test_json_syntax_errors_are_code_6) and more stdin than
# the plugin reads, from a pipe.
@pytest.mark.parametrize("case,run", with_smoke(sorted(_STDIN_CASES), "truncated") + [
    pytest.param("more than 64 MiB", run_plugin, id="more than 64 MiB-binary")])
def test_stdin_that_is_no_config_is_an_error_object(case, run, data_dir, tmp_path):
    build, code = _STDIN_CASES[case]
    before = tree(tmp_path)
    out = run("ADD", build(_dump(_valid(data_dir))))
    assert_error_object(out, code)
    assert tree(tmp_path) == before  # decoding fails before anything is created


_JUNK_INSIDE = {
    # id: (edit of a valid config's bytes, expected code; 0 for a result)
    "invalid utf-8 in an ignored value": (lambda v: v.replace(b'"bridge"', b'"br\xffdge"'), 0),
    "invalid utf-8 in the name": (lambda v: v.replace(b'"mynet"', b'"myn\xffet"'), 7),
    "escaped NUL in the name": (lambda v: v.replace(b'"mynet"', b'"myn\\u0000et"'), 7),
    "escaped NUL in an ignored value": (lambda v: v.replace(b'"bridge"', b'"b\\u0000"'), 0),
    "10 MB string value": (
        lambda v: v[:-1] + b', "padding": "' + b"x" * (10 * MIB) + b'"}', 0),
    "10 MB of whitespace": (lambda v: b" " * (10 * MIB) + v + b"\n" * MIB, 0),
}


@pytest.mark.parametrize("case,run", with_smoke(sorted(_JUNK_INSIDE),
                                               "invalid utf-8 in the name"))
def test_junk_inside_a_valid_config(case, run, data_dir):
    edit, code = _JUNK_INSIDE[case]
    out = run("ADD", edit(_dump(_valid(data_dir))))
    if code:
        assert_error_object(out, code)
    else:
        assert out.status == 0 and out.json["ips"][0]["address"] == "10.1.2.2/24", out
        assert (data_dir / "mynet" / "10.1.2.2").read_bytes() == b"dummy\r\neth0"


# Every key path the plugin reads, with the JSON type it must have. The base config below
# sets all of them to good values, so a wrong type at any one path is the only problem.
_TYPED_PATHS = [
    (("name",), "string"), (("cniVersion",), "string"), (("ipam",), "object"),
    (("ipam", "subnet"), "string"), (("ipam", "rangeStart"), "string"),
    (("ipam", "rangeEnd"), "string"), (("ipam", "gateway"), "string"),
    (("ipam", "routes"), "array"), (("ipam", "routes", 0), "object"),
    (("ipam", "routes", 0, "dst"), "string"), (("ipam", "routes", 0, "gw"), "string"),
    (("ipam", "routes", 0, "mtu"), "integer"), (("ipam", "routes", 0, "advmss"), "integer"),
    (("ipam", "routes", 0, "priority"), "integer"), (("ipam", "routes", 0, "table"), "integer"),
    (("ipam", "routes", 0, "scope"), "integer"),
    (("ipam", "ranges"), "array"), (("ipam", "ranges", 0), "array"),
    (("ipam", "ranges", 0, 0), "object"), (("ipam", "ranges", 0, 0, "subnet"), "string"),
    (("ipam", "ranges", 0, 0, "rangeStart"), "string"),
    (("ipam", "ranges", 0, 0, "rangeEnd"), "string"),
    (("ipam", "ranges", 0, 0, "gateway"), "string"),
    (("ipam", "ranges", 0, 0, "exclude"), "array"),
    (("ipam", "ranges", 0, 0, "exclude", 0), "string"),
    (("ipam", "resolvConf"), "string"), (("ipam", "dataDir"), "string"),
    (("ipam", "database"), "string"), (("ipam", "exclude"), "array"),
    (("ipam", "exclude", 0), "string"), (("ipam", "export"), "boolean"),
    (("ipam", "adopt"), "boolean"), (("ipam", "busyTimeout"), "number"),
    (("args",), "object"), (("args", "cni"), "object"), (("args", "cni", "ips"), "array"),
    (("args", "cni", "ips", 0), "string"),
    (("runtimeConfig",), "object"), (("runtimeConfig", "ips"), "array"),
    (("runtimeConfig", "ips", 0), "string"), (("runtimeConfig", "ipRanges"), "array"),
    (("runtimeConfig", "ipRanges", 0), "array"), (("runtimeConfig", "ipRanges", 0, 0), "object"),
    (("runtimeConfig", "ipRanges", 0, 0, "subnet"), "string"),
    (("runtimeConfig", "ipRanges", 0, 0, "rangeStart"), "string"),
    (("runtimeConfig", "ipRanges", 0, 0, "exclude"), "array"),
    (("prevResult",), "object"), (("prevResult", "ips"), "array"),
    (("prevResult", "ips", 0), "object"), (("prevResult", "ips", 0, "address"), "string"),
    (("cni.dev/valid-attachments",), "array"), (("cni.dev/valid-attachments", 0), "object"),
    (("cni.dev/valid-attachments", 0, "containerID"), "string"),
    (("cni.dev/valid-attachments", 0, "ifname"), "string"),
]
_SAMPLES = {"object": {"k": "v"}, "array": ["x"], "string": "x", "integer": 7,
            "fraction": 1.5, "boolean": True}
_WRONG = {"string": ["object", "array", "integer", "fraction", "boolean"],
          "array": ["object", "string", "integer", "fraction", "boolean"],
          "object": ["array", "string", "integer", "fraction", "boolean"],
          "boolean": ["object", "array", "string", "integer", "fraction"],
          "integer": ["object", "array", "string", "fraction", "boolean"],
          "number": ["object", "array", "string", "boolean"]}


def _typed_base(data_dir, resolv):
    rng = {"subnet": "10.1.3.0/24", "rangeStart": "10.1.3.10", "rangeEnd": "10.1.3.20",
           "gateway": "10.1.3.1", "exclude": ["10.1.3.15"]}
    return {
        "cniVersion": "1.1.0", "name": "typenet", "type": "bridge",
        "ipam": {"type": "host-local-sqlite", "subnet": SEED_SUBNET,
                 "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.200", "gateway": "10.1.2.1",
                 "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400,
                             "advmss": 1360, "priority": 5, "table": 100, "scope": 0}],
                 "ranges": [[rng]], "resolvConf": str(resolv), "dataDir": str(data_dir),
                 "database": str(data_dir / DB), "exclude": ["10.1.2.100"], "export": True,
                 "adopt": True, "busyTimeout": 5},
        "args": {"cni": {"ips": ["10.1.2.50"]}},
        "runtimeConfig": {"ips": ["10.1.3.12"], "ipRanges": [[{
            "subnet": "10.1.4.0/24", "rangeStart": "10.1.4.5", "exclude": ["10.1.4.6"]}]]},
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.1.2.50/24"}]},
        "cni.dev/valid-attachments": [{"containerID": "dummy", "ifname": "eth0"}],
    }


def _command_for(path):
    return {"prevResult": "CHECK", "cni.dev/valid-attachments": "GC"}.get(path[0], "ADD")


def test_typed_base_config_is_valid(data_dir, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    conf = _typed_base(data_dir, resolv)
    add = run_plugin("ADD", conf)
    assert add.status == 0, add
    assert [i["address"] for i in add.json["ips"]] == ["10.1.4.5/24", "10.1.2.50/24",
                                                       "10.1.3.12/24"]
    assert add.json["routes"][0]["mtu"] == 1400 and add.json["dns"]["nameservers"]
    conf["prevResult"] = add.json
    assert run_plugin("CHECK", conf).status == 0
    assert run_plugin("GC", conf).status == 0 and run_plugin("STATUS", conf).status == 0


@pytest.mark.parametrize("typed,run", with_smoke(_TYPED_PATHS, (("ipam", "subnet"), "string"),
                                                ids=lambda t: ".".join(map(str, t[0]))))
def test_wrong_json_type_at_every_key(typed, run, data_dir, tmp_path):
    path, kind = typed
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    before = tree(tmp_path)
    code = 6 if path in (("name",), ("cniVersion",)) else 7

    def one(wrong):
        conf = _typed_base(data_dir, resolv)
        parent = conf
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = _SAMPLES[wrong]
        return wrong, run(_command_for(path), conf)

    each = parallel if run is run_plugin else map  # in process: one thread, stderr captured
    for wrong, out in each(one, _WRONG[kind]):
        assert out.status == 1, (wrong, out)
        assert_error_object(out, code)
    assert tree(tmp_path) == before  # refused before the database or a directory is made


@pytest.mark.parametrize("name,run", with_smoke(
    ["../x", "a/b", "..", ".", "/abs", "/tmp/x", "../../etc/passwd", "x/../..", "..\\x",
     ".hidden", "-x", "a\nb", ""], "../x"))
def test_path_traversal_in_the_network_name(name, run, data_dir, tmp_path):
    before = tree(tmp_path)
    for command in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        conf = dict(_valid(data_dir), name=name, **{"cni.dev/valid-attachments": []})
        out = run(command, conf)
        assert_error_object(out, 7)
        assert out.json["msg"] in ("invalid characters found in network name",
                                   "missing network name"), out
    assert tree(tmp_path) == before


@pytest.mark.parametrize("env,run", with_smoke([
    ("container_id", "../../etc"), ("container_id", "a/b"), ("container_id", ".."),
    ("container_id", "/abs"), ("container_id", "."), ("container_id", "-x"),
    ("ifname", "../../etc"), ("ifname", "a/b"), ("ifname", ".."), ("ifname", "."),
    ("ifname", "/abs"), ("ifname", "../" * 5),
], ("container_id", "../../etc"), ids="-".join))
def test_path_traversal_in_container_id_and_ifname(env, run, data_dir, tmp_path):
    field, value = env
    before = tree(tmp_path)
    for command in ("ADD", "DEL", "CHECK"):
        out = run(command, _valid(data_dir), **{field: value})
        assert_error_object(out, 4)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("args,run", with_smoke([
    "IP", "=", ";", "==", "IP=10.1.2.9;", ";IP=10.1.2.9", "IP=10.1.2.9;;", "a=b=c",
    "K8S_POD_NAME=x", "IgnoreUnknown=maybe", "IgnoreUnknown", "IP=junk", "IP=10.1.2.9/33",
    "IP=10.1.2.9=1", "IP=10.1.2.9 ", " IP=10.1.2.9", "IP=10.1.2.9,10.1.2.10", "\n", "x" * 100_000,
], "IP=junk"))
def test_malformed_cni_args(args, run, data_dir, tmp_path):
    before = tree(tmp_path)
    for command in ("ADD", "DEL"):
        out = run(command, _valid(data_dir), args=args)
        assert_error_object(out, 4)
        assert out.json["msg"].startswith("ARGS: "), out
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command,run", with_smoke(
    ["FOO", "add", "Add", "ADD ", " ADD", "VERSIONS", "DEL\n", "GET", "ADD;DEL", "x" * 10_000],
    "FOO"))
def test_unknown_command(command, run, data_dir, tmp_path):
    before = tree(tmp_path)
    assert_error_object(run(command, _valid(data_dir)), 4)
    assert_error_object(run(command, _valid(data_dir), container_id=None), 3)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("prev,run", with_smoke([
    "x", 5, [], True, {"ips": {}}, {"ips": "10.1.2.2/24"}, {"ips": [5]}, {"ips": [None]},
    {"ips": [{}]}, {"ips": [{"address": 5}]}, {"ips": [{"address": None}]},
    {"ips": [{"address": "10.1.2.2"}]}, {"ips": [{"address": "10.1.2.2/33"}]},
    {"ips": [{"address": "junk/24"}]}, {"ips": [{"address": ""}]},
    {"ips": [{"address": "10.1.2.2/24"}, "x"]},
], {"ips": [{"address": "10.1.2.2/33"}]}, ids=repr))
def test_check_with_malformed_prev_result(prev, run, data_dir):
    conf = _valid(data_dir)
    assert run("ADD", conf).status == 0
    leases_before = lease_rows(str(data_dir / DB))
    conf["prevResult"] = prev
    assert_error_object(run("CHECK", conf), 7)
    assert lease_rows(str(data_dir / DB)) == leases_before
    conf["prevResult"] = {"cniVersion": "1.1.0", "ips": [{"address": "10.1.2.2/24"}]}
    assert run("CHECK", conf).status == 0


def test_resolv_conf_missing_directory_or_binary(data_dir, tmp_path):
    binary = tmp_path / "binary.conf"
    binary.write_bytes(random.Random(1).randbytes(64 * 1024) + b"\nnameserver \xff\x00\n")
    (tmp_path / "adir").mkdir()
    for path in (tmp_path / "missing.conf", tmp_path / "adir"):
        out = run_plugin("ADD", _valid(data_dir, resolvConf=str(path)))
        assert_error_object(out, 5)
        assert str(path) in out.json["msg"], out
    assert lease_rows(str(data_dir / DB)) == set()
    out = run_plugin("ADD", _valid(data_dir, resolvConf=str(binary)))
    assert_result_or_error(out)


# -- production bugs found by the tests above ----------------------------------------------
def test_json_syntax_errors_are_code_6(data_dir):
    """BUG: in the real binary every JSON syntax error found past a value's first character
    (truncation, a missing colon or comma, a bad escape, a raw control character) is code
    999 "internal error: <_json.Scanner object> returned NULL without setting an
    exception" (a SystemError). ``_json`` raises json.decoder.JSONDecodeError, which it
    only looks up in sys.modules, and the plugin's lean hot path never imports
    json.decoder. In-process tests cannot see it: pytest has imported json."""
    status, stdout, _ = run_raw("ADD", b'{"name": "mynet"')
    assert_utf8_error_object(status, stdout, 6)
    assert json.loads(stdout)["msg"].startswith("error unmarshall network config: "), stdout


@pytest.mark.parametrize("ipam,top", [
    ({"ranges": [[None]]}, {}),
    ({"ranges": [[{"subnet": "10.1.3.0/24"}, None]]}, {}),
    ({}, {"runtimeConfig": {"ipRanges": [[None]]}}),
], ids=["ranges [[null]]", "ranges [[range, null]]", "ipRanges [[null]]"])
def test_null_range_in_a_range_set(ipam, top, data_dir):
    """BUG: a null range inside a range set reaches ``obj.get`` as None: AttributeError,
    "internal error". Go unmarshals null into the zero Range, whose nil subnet it
    reports as below (code 999 there, 7 here)."""
    conf = dict(_valid(data_dir, **ipam), **top)
    if "ranges" in ipam:
        del conf["ipam"]["subnet"]
    out = run_plugin("ADD", conf)
    assert_error_object(out, 7)
    assert out.json["msg"] == "invalid range set 0: IP <nil> not v4 nor v6", out


@pytest.mark.parametrize("subnet,start,end", [
    ("10.1.2.0/24", "10.1.2.1", "::"), ("10.1.2.0/24", "10.1.2.1", "2001:db8::9"),
    ("2001:db8::/64", "2001:db8::5", "10.1.2.9"),
])
def test_range_end_of_the_other_family(subnet, start, end, data_dir):
    """BUG: ``start <= end`` runs before the family of rangeEnd is checked; addr.IP's
    comparison raises TypeError across families: "internal error". host-local names
    RangeStart or RangeEnd (it depends on the bytes Go's Contains compares)."""
    out = run_plugin("ADD", _valid(data_dir, subnet=subnet, rangeStart=start, rangeEnd=end))
    assert_error_object(out, 7)
    assert out.json["msg"] in ("invalid range set 0: RangeStart %s not in network %s"
                               % (start, subnet),
                               "invalid range set 0: RangeEnd %s not in network %s"
                               % (end, subnet)), out


@pytest.mark.parametrize("ipam,top", [
    ({"subnet": "\ud800"}, {}),
    ({"rangeStart": "10.1.2.\udfff"}, {}),
    ({"routes": [{"dst": "\ud800/0"}]}, {}),
    ({"exclude": ["\ud800"]}, {}),
    ({}, {"args": {"cni": {"ips": ["\ud800"]}}}),
], ids=["subnet", "rangeStart", "route", "exclude", "args.cni.ips"])
def test_lone_surrogate_escape_in_a_config_value(ipam, top, data_dir):
    """BUG: ``"\\ud800"`` is valid JSON and decodes to a lone surrogate. Echoed in the
    error message, it cannot be encoded on stdout: traceback, empty stdout."""
    conf = dict(_valid(data_dir, **ipam), **top)
    status, stdout, _ = run_raw("ADD", _dump(conf))  # json.dumps escapes it as \ud800
    assert_utf8_error_object(status, stdout, 7)


@pytest.mark.parametrize("key", ["dataDir", "database", "resolvConf"])
@pytest.mark.parametrize("junk", ["\x00", "\ud800"], ids=["NUL", "lone surrogate"])
def test_path_with_nul_or_lone_surrogate(key, junk, data_dir, tmp_path):
    """BUG: a NUL or a lone surrogate in a path value makes open()/os.makedirs() raise
    ValueError (not OSError): "internal error", code 999."""
    before = tree(tmp_path)
    status, stdout, _ = run_raw("ADD", _dump(_valid(data_dir, **{key: "%s/x%sy" % (
        data_dir, junk)})))
    text = stdout.decode("utf-8")
    obj = json.loads(text)
    assert status == 1 and obj["code"] in (5, 7), text
    assert not obj["msg"].startswith("internal error"), text
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_ifname_that_is_not_utf8(command, data_dir):
    """BUG: CNI_IFNAME bytes that are not UTF-8 reach os.environ as lone surrogates
    (surrogateescape); binding them in SQLite raises UnicodeEncodeError: "internal error"."""
    status, stdout, _ = run_raw(command, _dump(_valid(data_dir)), ifname="eth\udcff")
    assert_utf8_error_object(status, stdout, 4)
    assert lease_rows(str(data_dir / DB)) == set()


@pytest.mark.parametrize("strict_stdout", [False, True], ids=["default", "PYTHONIOENCODING"])
@pytest.mark.parametrize("env", [
    {"CNI_ARGS": "K\udcff=v"}, {"CNI_ARGS": "IP=10.1.2.9\udcff"},
    {"CNI_COMMAND": "AD\udcff"},
], ids=["unknown arg", "bad IP", "unknown command"])
def test_error_echoing_env_bytes_that_are_not_utf8(env, strict_stdout, data_dir):
    """BUG: messages that echo an environment value holding non-UTF-8 bytes are written
    back as those raw bytes (stdout is not UTF-8 JSON), and with a strict stdout encoding
    (PYTHONIOENCODING=utf-8, or a UTF-8 locale other than C.UTF-8) the write raises:
    traceback, empty stdout."""
    extra = dict(env, **({"PYTHONIOENCODING": "utf-8"} if strict_stdout else {}))
    status, stdout, _ = run_raw("ADD", _dump(_valid(data_dir)), env_extra=extra)
    assert_utf8_error_object(status, stdout, 4)


@pytest.mark.parametrize("busy", ["1e400", "1e308", "1e20", "1" + "0" * 400],
                         ids=["1e400", "1e308", "1e20", "400 digits"])
def test_busy_timeout_out_of_range(busy, data_dir):
    """BUG: a huge busyTimeout overflows. A 400-digit integer fails in sqlite3.connect
    (OverflowError) at once; 1e20, 1e308 and 1e400 (which Python reads as inf) pass, and
    then overflow in setitimer() as soon as another writer holds the lock: "internal
    error" in every case, where a config error (code 7) is due."""
    text = _dump(_valid(data_dir, busyTimeout=12345)).replace(b"12345", busy.encode())
    with open(data_dir / (DB + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = run_plugin("ADD", text)
    assert_error_object(out, 7)


@pytest.mark.parametrize("database", [":memory:", "sqlite:///:memory:", "sqlite://"])
def test_in_memory_database_is_refused(database, data_dir, tmp_path, monkeypatch):
    """BUG: ``"database": ":memory:"`` is accepted: each invocation gets an empty
    in-memory database (every container the same address; DEL and GC forget nothing),
    and files named ':memory:' and ':memory:.lock' appear in the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    conf = _valid(data_dir, database=database)
    first = run_inprocess("ADD", conf, container_id="c1")
    second = run_inprocess("ADD", conf, container_id="c2")
    assert sorted(os.listdir(cwd)) == []
    assert_error_object(first, 7)
    assert_error_object(second, 7)


def test_long_network_name_that_host_local_accepts(data_dir):
    """BUG: a network name of 229 to 255 characters is a valid directory name and works
    with host-local, but the pending marker ``.host-local-sqlite-pending-<name>`` is
    longer than NAME_MAX (255): every ADD fails with code 5."""
    conf = dict(_valid(data_dir), name="n" * 240)
    add = run_plugin("ADD", conf)
    assert add.status == 0, add
    assert (data_dir / ("n" * 240) / "10.1.2.2").exists()
    assert run_plugin("DEL", conf).status == 0
    assert lease_rows(str(data_dir / DB)) == set()
