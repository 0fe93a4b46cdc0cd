"""Faults from outside: a full disk, read-only files, foreign or damaged files, links, a
database replaced under a call.

Each test drives the installed plugin and ``ipamctl`` as separate processes, as a
runtime and an operator would, and checks three things: the answer is a CNI error
object (valid JSON, the right code, no traceback), nothing is half-written (database,
mirror, temporary files), and nothing outside the data directory is ever touched.

The tests that mount a tmpfs or make a file immutable need root. They skip with the
reason otherwise; under CI=true a skip fails the run, which is what CI wants.
"""
import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from urllib.parse import quote

import pytest
from helpers import PLUGIN, Outcome, cni_env, ipamctl, run_plugin
from plugin_procs import Invocation, leases

from ipam.paths import DB_NAME, PENDING_PREFIX, TMP_PREFIX

SUBNET = {"subnet": "10.1.2.0/24"}
QUERIES = {
    # leases: network, ip, container_id, ifname first (mirror_of_db), then the rest
    "leases": "SELECT network, ip, container_id, ifname, range_set, ip_key, next_free, "
              "allocated_at, boot_id FROM leases ORDER BY network, ip_key",
    "history": "SELECT * FROM history ORDER BY id",
    "cursors": "SELECT network, range_set, ip FROM cursors ORDER BY network, range_set",
    "networks": "SELECT * FROM networks ORDER BY network",
    "alembic_version": "SELECT version_num FROM alembic_version",
}

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: mounts a tmpfs, remounts it read-only, or makes the "
                        "database file immutable (chattr +i / read-only bind mount)")


# -- helpers ----------------------------------------------------------------------------
def make_conf(data_dir, ipam=None, name="mynet", version="1.0.0"):
    ipam = dict({"type": "host-local-sqlite", "dataDir": str(data_dir)}, **(ipam or SUBNET))
    return {"cniVersion": version, "name": name, "type": "ipvlan", "master": "foo0",
            "ipam": ipam}


def add_ip(conf, cid):
    out = run_plugin("ADD", conf, container_id=cid)
    assert out.status == 0, out
    return out.json["ips"][0]["address"].split("/")[0]


def assert_error(out, code, *needles):
    """A CNI error object on stdout, exit 1 (run_plugin already refused a traceback)."""
    assert out.status == 1, out
    assert isinstance(out.json, dict) and set(out.json) <= {"code", "msg", "details"}, out
    assert out.json["code"] == code, out
    assert "Traceback" not in out.out
    for needle in needles:
        assert needle in out.json["msg"], (needle, out)


def db_state(path):
    """Every row of every table, read through a read-only connection: a read-only
    connection never checkpoints or deletes the WAL, so looking changes nothing."""
    conn = sqlite3.connect("file:%s?mode=ro" % quote(str(path)), uri=True)
    try:
        state = {t: conn.execute(sql).fetchall() for t, sql in QUERIES.items()}
        state["integrity"] = conn.execute("PRAGMA integrity_check").fetchall()
        return state
    finally:
        conn.close()


def tree(path):
    """A directory as data: name -> bytes (file), ('link', target) or a nested dict."""
    out = {}
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[name] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[name] = tree(p)
        else:
            with open(p, "rb") as f:
                out[name] = f.read()
    return out


def identity(path):
    """Bytes and inode: a file rewritten, truncated or replaced (deleted + recreated)
    differs in one of them."""
    st = os.stat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_ino, st.st_dev


def mirror_of_db(state, network="mynet"):
    """The mirror files the database calls for (addresses, cursors and lock)."""
    want = {"lock": b""}
    for net, ip, cid, ifname, *_ in state["leases"]:
        if net == network:
            want[ip] = (cid if ifname is None else "%s\r\n%s" % (cid, ifname)).encode()
    for net, idx, ip in state["cursors"]:
        if net == network:
            want["last_reserved_ip.%d" % idx] = ip.encode()
    return want


def no_temp_files(data_dir):
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            assert not name.startswith(TMP_PREFIX), os.path.join(root, name)


@contextlib.contextmanager
def mounted_tmpfs(path, size="4m"):
    """A small tmpfs at ``path`` (mode 0755: not tmpfs's default 1777), always unmounted."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                           str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs (root without CAP_SYS_ADMIN?): %s"
                    % proc.stderr.strip())
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path):
    """Write ``path`` until the filesystem has no block left; returns the open fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    chunk = b"\0" * 65536
    while True:
        try:
            os.write(fd, chunk)  # a short write fills the last blocks, then ENOSPC
        except OSError as e:
            if e.errno != errno.ENOSPC:
                os.close(fd)
                raise
            return fd


# -- disk full --------------------------------------------------------------------------
# How much room the ADD finds, and which of its writes fails:
#   "journal":  none; the mirror's journal (pending marker), the first write, fails;
#   "address":  one page, the journal's; writing the new address file fails (the WAL is
#               not even reached);
#   "cursor":   two pages; the address file is written, last_reserved_ip.0 is not;
#   "wal":      four pages; both mirror files are written, then COMMIT cannot grow
#               the WAL (SQLITE_FULL), after the mirror was changed;
#   "wal-room": none, but the WAL was checkpointed (RESTART) by a connection that stays
#               open, so it could take the commit in place: the journal write fails.
DISK_FULL = {
    "journal": (0, False, "No space left on device", PENDING_PREFIX + "mynet"),
    "address": (1, False, "No space left on device", "mynet/10.1.2.5"),
    "cursor": (2, False, "No space left on device", "mynet/last_reserved_ip.0"),
    "wal": (4, False, "database or disk is full", DB_NAME),
    "wal-room": (0, True, "No space left on device", PENDING_PREFIX + "mynet"),
}


@pytest.mark.parametrize("where", sorted(DISK_FULL))
@pytest.mark.root
@needs_root
def test_disk_full_while_allocating(where, tmp_path):
    pages, wal_room, cause, culprit = DISK_FULL[where]
    if pages and os.sysconf("SC_PAGE_SIZE") != 4096:
        pytest.skip("the page-exact variants assume 4 KiB tmpfs pages")
    with mounted_tmpfs(tmp_path / "mnt") as data:
        conf = make_conf(data)
        db = data / DB_NAME
        assert [add_ip(conf, c) for c in "abc"] == ["10.1.2.2", "10.1.2.3", "10.1.2.4"]
        keep = None
        if wal_room:
            keep = sqlite3.connect(str(db), isolation_level=None)
            busy, frames, done = keep.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            assert busy == 0 and frames == done > 0
        before = db_state(db)
        mirror_before = tree(data / "mynet")
        top_before = sorted(os.listdir(data))
        big = fill(data / "big")
        try:
            if pages:
                os.ftruncate(big, os.fstat(big).st_size - pages * 4096)
            out = run_plugin("ADD", conf, container_id="d")
            assert_error(out, 5, cause, culprit)
            assert str(data) in out.json["msg"]
            # Nothing half-written: the database, its history and the mirror are as
            # they were, no temporary file, no pending marker (the files an ADD wrote
            # before its failed COMMIT were put back).
            assert db_state(db) == before
            assert before["integrity"] == [("ok",)]
            assert tree(data / "mynet") == mirror_before == mirror_of_db(before)
            assert not (data / "mynet" / "10.1.2.5").exists()
            assert sorted(n for n in os.listdir(data) if n != "big") == top_before
            no_temp_files(data)
            proc = ipamctl("check", data_dir=data, expect=None)  # read-only: works on a full disk
            assert proc.returncode == 0, proc.stdout + proc.stderr
            # A repeated ADD changes nothing, so it needs no space: it still answers.
            again = run_plugin("ADD", conf, container_id="a")
            assert again.status == 0 and again.json["ips"][0]["address"] == "10.1.2.2/24"
            assert db_state(db) == before
        finally:
            os.close(big)
            os.unlink(data / "big")
            if keep is not None:
                keep.close()
        assert add_ip(conf, "d") == "10.1.2.5"  # the cursor did not move on the failure
        after = db_state(db)
        # The earlier leases are intact (only .4's "next address is free" flag changed).
        assert [r[:6] + r[7:] for r in after["leases"][:3]] == [
            r[:6] + r[7:] for r in before["leases"]]
        assert [r[1] for r in after["leases"]] == ["10.1.2.2", "10.1.2.3", "10.1.2.4",
                                                  "10.1.2.5"]
        assert tree(data / "mynet") == mirror_of_db(after)
        proc = ipamctl("check", data_dir=data, expect=None)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        no_temp_files(data)


# -- read-only database file, read-only directory -------------------------------------
@pytest.mark.root
@needs_root
def test_read_only_directory(tmp_path):
    with mounted_tmpfs(tmp_path / "mnt") as data:
        conf = make_conf(data)
        add_ip(conf, "a")
        add_ip(conf, "b")
        db = data / DB_NAME
        ident = identity(db)
        state = db_state(db)
        files = tree(data)
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        try:
            for command, cid in (("ADD", "c"), ("ADD", "a"), ("DEL", "a")):
                out = run_plugin(command, conf, container_id=cid)
                assert_error(out, 5, str(db), "Read-only file system")
            proc = ipamctl("release", "--yes", "10.1.2.2", data_dir=data, expect=None)
            assert proc.returncode == 1 and "Read-only file system" in proc.stderr
            proc = ipamctl("check", data_dir=data, expect=None)  # reading still works
            assert proc.returncode == 0, proc.stdout + proc.stderr
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(data)], check=True)
        assert identity(db) == ident
        assert tree(data) == files
        assert db_state(db) == state
        assert add_ip(conf, "c") == "10.1.2.4"


@contextlib.contextmanager
def read_only_file(path, how):
    """Make one file unwritable for root: the immutable flag, or a read-only bind mount."""
    if how == "chattr":
        if shutil.which("chattr") is None:
            pytest.skip("chattr is missing (e2fsprogs)")
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip("chattr +i is not supported here: %s" % proc.stderr.strip())
        undo = ["chattr", "-i", str(path)]
    else:
        proc = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip("cannot bind-mount a file: %s" % proc.stderr.strip())
        proc = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run(["umount", str(path)])
            pytest.skip("cannot remount a bind mount read-only: %s" % proc.stderr.strip())
        undo = ["umount", str(path)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize("how", ["chattr", "bind"])
@pytest.mark.root
@needs_root
def test_read_only_database_file(how, tmp_path):
    data = tmp_path / "data"  # ext4 or whatever /tmp is; not a tmpfs
    conf = make_conf(data)
    add_ip(conf, "a")
    add_ip(conf, "b")
    db = data / DB_NAME
    conn = sqlite3.connect(str(db))
    conn.execute("SELECT count(*) FROM leases").fetchone()
    conn.close()  # the last connection checkpoints: everything is in the main file
    ident = identity(db)
    state = db_state(db)
    mirror = tree(data / "mynet")
    with read_only_file(db, how):
        for command, cid in (("ADD", "c"), ("ADD", "a"), ("DEL", "a")):
            out = run_plugin(command, conf, container_id=cid)
            assert_error(out, 5, str(db), "readonly database")
            assert identity(db) == ident
        proc = ipamctl("release", "--yes", "10.1.2.2", data_dir=data, expect=None)
        assert proc.returncode == 1 and "readonly database" in proc.stderr, proc.stderr
        for args in (["db", "upgrade"], ["check"], ["list"]):  # no write needed: fine
            proc = ipamctl(*args, data_dir=data, expect=None)
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert identity(db) == ident
    assert identity(db) == ident
    assert db_state(db) == state
    assert tree(data / "mynet") == mirror
    assert add_ip(conf, "c") == "10.1.2.4"


# -- not a database, newer schema -------------------------------------------------------
GARBAGE = {
    "text": b"this is not a database at all\n" * 200,
    "random": bytes(range(256)) * 32,
    "short": b"not sqlite",
    "one-byte": b"x",  # SQLite itself reports a 1-byte file as empty (ticket #3260)
    "bad-header": b"SQLite format 3\0" + b"\xff" * 200,
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_database_file_is_refused_and_left_alone(kind, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = tmp_path / "pool.db"
    db.write_bytes(GARBAGE[kind])
    ident = identity(db)
    conf = make_conf(data, dict(SUBNET, database=str(db)))
    for command in ("ADD", "DEL", "CHECK"):
        out = run_plugin(command, conf, container_id="a")
        assert_error(out, 5, str(db), "not a SQLite database")
        assert identity(db) == ident
    for args in (["list"], ["check"], ["check", "--repair"], ["db", "upgrade"]):
        proc = ipamctl(*args, data_dir=data, database=db, expect=None)
        assert proc.returncode == 1 and str(db) in proc.stderr, (args, proc.stderr)
        assert "not a database" in proc.stderr, (args, proc.stderr)
    assert identity(db) == ident
    assert not (data / "mynet").exists() or os.listdir(data / "mynet") == ["lock"]


def test_newer_schema_is_refused_untouched_and_never_downgraded(tmp_path):
    data = tmp_path / "data"
    conf = make_conf(data)
    add_ip(conf, "a")
    db = data / DB_NAME
    conn = sqlite3.connect(str(db))
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()  # the last connection: checkpoints, the main file holds everything
    ident = identity(db)
    state = db_state(db)
    mirror = tree(data / "mynet")
    for command, cid in (("ADD", "b"), ("ADD", "a"), ("DEL", "a"), ("CHECK", "a")):
        out = run_plugin(command, conf, container_id=cid)
        assert_error(out, 7, str(db), "newer")
        assert identity(db) == ident
    for args in (["db", "upgrade"], ["check", "--repair"], ["export"],
                 ["release", "--yes", "10.1.2.2"]):
        proc = ipamctl(*args, data_dir=data, expect=None)
        assert proc.returncode == 1 and str(db) in proc.stderr, (args, proc.stderr)
        assert "newer" in proc.stderr and "9999" in proc.stderr, (args, proc.stderr)
    assert identity(db) == ident
    assert db_state(db) == state
    assert state["alembic_version"] == [("9999",)]
    assert tree(data / "mynet") == mirror


# -- damaged cursors --------------------------------------------------------------------
@pytest.mark.parametrize("junk", [b"\x00\xffgarbage\r\n", b"10.1.2", b"10.1.", b"",
                                  b"10.1.2.999", b"2001:db8::"])
def test_damaged_mirror_cursor_is_never_read_back(junk, tmp_path):
    """host-local would start again at the range start (10.1.2.2, freed); we go on from
    the database's cursor and rewrite the file."""
    data = tmp_path / "data"
    conf = make_conf(data)
    assert [add_ip(conf, c) for c in "abc"] == ["10.1.2.2", "10.1.2.3", "10.1.2.4"]
    assert run_plugin("DEL", conf, container_id="a").status == 0
    cursor = data / "mynet" / "last_reserved_ip.0"
    cursor.write_bytes(junk)
    assert add_ip(conf, "d") == "10.1.2.5"
    assert cursor.read_bytes() == b"10.1.2.5"
    assert oct(cursor.stat().st_mode & 0o777) == "0o600"
    assert db_state(data / DB_NAME)["cursors"] == [("mynet", 0, "10.1.2.5")]
    assert ipamctl("check", data_dir=data, expect=None).returncode == 0


@pytest.mark.parametrize("junk", ["nonsense", "10.1.2", ""])
def test_damaged_database_cursor_counts_as_no_cursor(junk, tmp_path):
    """As host-local with an unparsable file: start at the range start."""
    data = tmp_path / "data"
    conf = make_conf(data)
    assert [add_ip(conf, c) for c in "abc"] == ["10.1.2.2", "10.1.2.3", "10.1.2.4"]
    assert run_plugin("DEL", conf, container_id="a").status == 0
    db = data / DB_NAME
    conn = sqlite3.connect(str(db))
    conn.execute("UPDATE cursors SET ip = ?", (junk,))
    conn.commit()
    conn.close()
    assert add_ip(conf, "d") == "10.1.2.2"
    assert db_state(db)["cursors"] == [("mynet", 0, "10.1.2.2")]
    assert (data / "mynet" / "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
    assert add_ip(conf, "e") == "10.1.2.5"  # and on from the good cursor
    assert (data / "mynet" / "last_reserved_ip.0").read_bytes() == b"10.1.2.5"
    assert ipamctl("check", data_dir=data, expect=None).returncode == 0


@pytest.mark.parametrize("junk", ["nonsense", "10.1.2", ""])
def test_damaged_database_cursor_is_never_written_to_the_mirror(junk, tmp_path):
    """Rewriting the mirror (``ipamctl export``, or the plugin's repair of a pending
    marker) must not turn an unparsable database cursor into the text ``None``: the
    database has no usable cursor, so the mirror should have none either (or a good one).
    """
    data = tmp_path / "data"
    conf = make_conf(data)
    add_ip(conf, "a")
    add_ip(conf, "b")
    db = data / DB_NAME
    conn = sqlite3.connect(str(db))
    conn.execute("UPDATE cursors SET ip = ?", (junk,))
    conn.commit()
    conn.close()
    cursor = data / "mynet" / "last_reserved_ip.0"

    def cursor_ok():
        return not cursor.exists() or cursor.read_bytes() in (b"10.1.2.2", b"10.1.2.3")

    proc = ipamctl("export", data_dir=data, expect=None)
    assert proc.returncode == 0, proc.stderr
    assert cursor_ok(), cursor.read_bytes()
    assert ipamctl("check", data_dir=data, expect=None).returncode == 0
    # The plugin's own resync: a pending marker left by a crash, then a DEL.
    (data / (PENDING_PREFIX + "mynet")).touch()
    cursor.write_bytes(b"10.1.2.3")
    assert run_plugin("DEL", conf, container_id="a").status == 0
    assert cursor_ok(), cursor.read_bytes()


# -- symbolic links and foreign files ---------------------------------------------------
@pytest.mark.parametrize("history", ["served", "new"])
def test_symlinked_network_directory_is_refused(history, tmp_path):
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    conf = make_conf(data)
    if history == "served":  # the network's files moved outside, a link left instead
        add_ip(conf, "a")
        (data / "mynet").rename(outside / "mynet")
    else:
        data.mkdir()
        (outside / "mynet").mkdir()
        (outside / "mynet" / "notes.txt").write_bytes(b"mine")
    (data / "mynet").symlink_to(outside / "mynet")
    db = data / DB_NAME
    state = db_state(db) if db.exists() else None
    target = tree(outside)
    for command, cid in (("ADD", "b"), ("ADD", "a"), ("DEL", "a")):
        out = run_plugin(command, conf, container_id=cid)
        assert_error(out, 5, "symbolic link", str(data / "mynet"))
        assert tree(outside) == target
    if state is not None:
        assert db_state(db) == state  # rolled back: no lease, history or cursor change
    else:  # refused before its transaction: not even the schema was made
        with sqlite3.connect(str(db)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        conn.close()
        assert "leases" not in tables or db_state(db)["leases"] == db_state(db)["history"] == []
    if state is not None:  # ipamctl knows the network: it refuses the link too
        for args in (["export"], ["check", "--repair"], ["check"]):
            proc = ipamctl(*args, data_dir=data, expect=None)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert "symbolic link" in proc.stdout + proc.stderr
        proc = ipamctl("release", "--yes", "10.1.2.2", data_dir=data, expect=None)
        assert proc.returncode == 1 and "symbolic link" in proc.stderr
        assert db_state(db) == state
    assert tree(outside) == target
    assert (data / "mynet").is_symlink()


@pytest.mark.parametrize("admin", [["export"], ["check", "--repair"]])
def test_symlinked_files_in_the_network_directory_are_never_followed(admin, tmp_path):
    """A link under an address's name is no one's lease file: never followed, never
    replaced (host-local's O_EXCL create skips its address too). Cursor files are ours:
    a link there is replaced, not followed."""
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    conf = make_conf(data)
    assert [add_ip(conf, c) for c in "ab"] == ["10.1.2.2", "10.1.2.3"]
    net = data / "mynet"
    links = {"10.1.2.2": "t_export",   # a's lease: the admin command reports it
             "10.1.2.3": "t_del",      # b's lease: DEL leaves it (it is not b's file)
             "10.1.2.4": "t_add",      # the next address: ADD skips it
             "10.1.2.77": "t_stale",   # no lease: left alone
             "last_reserved_ip.0": "t_cursor"}
    for name, target in links.items():
        (outside / target).write_bytes(b"precious " + target.encode())
        if (net / name).exists():
            (net / name).unlink()
        (net / name).symlink_to(outside / target)
    before = tree(outside)

    assert add_ip(conf, "c") == "10.1.2.5"
    assert (net / "10.1.2.4").is_symlink()
    for name, content in (("10.1.2.5", b"c\r\neth0"), ("last_reserved_ip.0", b"10.1.2.5")):
        assert not (net / name).is_symlink() and (net / name).read_bytes() == content
        assert oct((net / name).stat().st_mode & 0o777) == "0o600"
    assert tree(outside) == before

    assert run_plugin("DEL", conf, container_id="b").status == 0
    assert (net / "10.1.2.3").is_symlink()
    assert tree(outside) == before

    proc = ipamctl(*admin, data_dir=data, expect=None)
    assert proc.returncode == (0 if admin == ["export"] else 1), proc.stdout + proc.stderr
    assert "10.1.2.2: blocked" in proc.stdout.replace("left      ", "")
    for name in ("10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.77"):
        assert (net / name).is_symlink(), name
    assert tree(outside) == before
    check = ipamctl("check", data_dir=data, expect=None)
    assert check.returncode == 1 and "10.1.2.2: blocked" in check.stdout, check.stdout
    (net / "10.1.2.2").unlink()  # the operator's fix
    assert ipamctl("check", "--repair", data_dir=data, expect=None).returncode == 0
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert ipamctl("check", data_dir=data, expect=None).returncode == 0


def foreign_files(net, outside):
    """Files the mirror does not own: none may ever change, move or go."""
    (outside / "t").write_bytes(b"precious")
    (net / "notes.txt").write_bytes(b"a\r\neth0")
    (net / ".hidden").write_bytes(b"x")
    (net / "10.1.2.250.bak").write_bytes(b"old\r\neth0")
    (net / "last_reserved_ip").write_bytes(b"10.1.2.9")  # pre-0.7 cursor name
    (net / "last_reserved_ip.x").write_bytes(b"10.1.2.9")
    (net / "010.001.002.003").write_bytes(b"z\r\neth0")  # not canonical
    (net / "2001:DB8::5").write_bytes(b"z\r\neth0")       # not canonical
    (net / "sub").mkdir()
    (net / "sub" / "10.1.2.3").write_bytes(b"nested")
    (net / "10.1.2.200").mkdir()  # a directory with an address name, no lease
    (net / "10.1.2.200" / "keep").write_bytes(b"keep")
    (net / "link-out").symlink_to(outside / "t")


def foreign_part(net):
    ours = {"lock"} | {n for n in os.listdir(net)
                       if n.startswith("last_reserved_ip.") and n[17:].isdigit()}
    ours |= {n for n in os.listdir(net) if n.startswith("10.1.2.") and n[7:].isdigit()
             and not (net / n).is_dir()}
    return {k: v for k, v in tree(net).items() if k not in ours}


def test_foreign_files_are_never_touched(tmp_path):
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    conf = make_conf(data, version="1.1.0")
    add_ip(conf, "a")
    net = data / "mynet"
    foreign_files(net, outside)
    before, before_out = foreign_part(net), tree(outside)
    inodes = {n: os.lstat(net / n).st_ino for n in before}

    def unchanged():
        assert foreign_part(net) == before
        assert {n: os.lstat(net / n).st_ino for n in before} == inodes
        assert tree(outside) == before_out

    assert add_ip(conf, "b") == "10.1.2.3"
    unchanged()
    (data / (PENDING_PREFIX + "mynet")).touch()  # next command resyncs the directory
    assert add_ip(conf, "c") == "10.1.2.4"
    assert not (data / (PENDING_PREFIX + "mynet")).exists()
    unchanged()
    assert run_plugin("DEL", conf, container_id="a").status == 0
    unchanged()
    assert run_plugin("CHECK", conf, container_id="b").status == 0
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]})
    assert run_plugin("GC", gc, container_id=None, ifname=None, netns=None).status == 0
    unchanged()
    for args in (["export"], ["check", "--repair"], ["release", "--yes", "10.1.2.3"]):
        proc = ipamctl(*args, data_dir=data, expect=None)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        unchanged()
    assert sorted(set(os.listdir(net)) - set(before)) == ["last_reserved_ip.0", "lock"]


def test_check_repair_claims_no_repair_it_did_not_make(tmp_path):
    """A subdirectory is foreign even when it has an address's name: ``check`` must not
    call it a stale lease file that ``check --repair`` then "repairs" (it cannot unlink
    a directory, and it must not try), leaving ``check`` failing for ever."""
    data = tmp_path / "data"
    conf = make_conf(data)
    add_ip(conf, "a")
    net = data / "mynet"
    (net / "10.1.2.200").mkdir()
    (net / "10.1.2.200" / "keep").write_bytes(b"keep")
    repair = ipamctl("check", "--repair", data_dir=data, expect=None)
    check = ipamctl("check", data_dir=data, expect=None)
    assert (net / "10.1.2.200" / "keep").read_bytes() == b"keep"
    assert (repair.returncode, check.returncode) == (0, 0), (repair.stdout, check.stdout)
    assert "10.1.2.200" not in repair.stdout + check.stdout


# -- file modes -------------------------------------------------------------------------
def run_plugin_umask(command, conf, umask, **kw):
    env = {"PATH": os.environ.get("PATH", "")}
    env.update(cni_env(command, **kw))
    proc = subprocess.run([PLUGIN], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=60, umask=umask)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_modes(data_dir, seen):
    """The database and its companions, and every mirror file, 0600; directories 0755;
    nothing under ``data_dir`` world-writable. ``seen`` collects the files checked."""
    assert stat.S_IMODE(os.lstat(data_dir).st_mode) == 0o755
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            assert not mode & 0o002, (path, oct(mode))
            if stat.S_ISDIR(st.st_mode):
                assert mode == 0o755, (path, oct(mode))
            elif stat.S_ISREG(st.st_mode):
                assert mode == 0o600, (path, oct(mode))
                seen.add(os.path.relpath(path, data_dir))


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_file_modes(umask, tmp_path):
    data = tmp_path / "data"  # created by the plugin
    conf = make_conf(data, {"ranges": [[{"subnet": "10.1.2.0/24"}],
                                       [{"subnet": "2001:db8::/64"}]]}, version="1.1.0")
    seen = set()

    def plugin(command, **kw):
        out = run_plugin_umask(command, conf if command != "GC" else dict(
            conf, **{"cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]}),
            umask, **kw)
        assert out.status == 0, (command, out)
        assert_modes(data, seen)

    plugin("ADD", container_id="a")
    plugin("ADD", container_id="b")
    plugin("ADD", container_id="c")
    plugin("CHECK", container_id="a")
    plugin("DEL", container_id="a")
    plugin("STATUS", container_id=None, ifname=None, netns=None)
    plugin("GC", container_id=None, ifname=None, netns=None)
    # The plugin leaves the WAL and shared memory behind (no close): they were checked.
    assert {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + ".lock", "mynet/lock",
            "mynet/10.1.2.2", "mynet/2001:db8::2", "mynet/last_reserved_ip.0",
            "mynet/last_reserved_ip.1"} <= seen

    source = tmp_path / "hl"
    (source / "other").mkdir(parents=True)
    (source / "other" / "10.5.0.2").write_bytes(b"x\r\neth0")
    for args in (["list"], ["stats"], ["history"], ["check"], ["export"],
                 ["check", "--repair"], ["release", "--yes", "10.1.2.3"], ["db", "upgrade"],
                 ["db", "current"], ["import", "--from", str(source)],
                 ["gc", "--network", "mynet", "--valid-file", "-", "--grace", "0s",
                  "--apply", "--force"]):
        # Something for the repairing commands to write.
        (data / "mynet" / "last_reserved_ip.0").unlink(missing_ok=True)
        proc = ipamctl(*args, data_dir=data, umask=umask, expect=None)
        assert proc.returncode in (0, 1), (args, proc.stdout, proc.stderr)
        assert_modes(data, seen)
    plugin("ADD", container_id="d")
    copy = tmp_path / "copy"
    proc = ipamctl("export", "--to", str(copy), data_dir=data, umask=umask, expect=None)
    assert proc.returncode == 0, proc.stderr
    assert_modes(copy, set())
    assert_modes(data, seen)


@pytest.mark.parametrize("how", ["plugin", "ipamctl"])
def test_directories_created_above_the_data_dir_are_not_world_writable(how, tmp_path):
    """With umask 000, os.makedirs gives the directories it creates on the way 0777 (its
    mode applies to the last one only): a world-writable /var/lib/cni would let anyone
    swap the data directory."""
    data = tmp_path / "var" / "lib" / "cni" / "networks"
    if how == "plugin":
        out = run_plugin_umask("ADD", make_conf(data), 0, container_id="a")
        assert out.status == 0, out
    else:
        proc = ipamctl("db", "upgrade", data_dir=data, umask=0, expect=None)
        assert proc.returncode == 0, proc.stderr
    for d in (tmp_path / "var", tmp_path / "var" / "lib", tmp_path / "var" / "lib" / "cni",
              data):
        assert not os.stat(d).st_mode & 0o002, (d, oct(os.stat(d).st_mode))


# -- what a database location is -------------------------------------------------------
@pytest.mark.parametrize("link", ["", "-wal", "-shm"])
def test_a_symbolic_link_at_the_database_path_is_never_followed(tmp_path, link):
    """In a dataDir a less-privileged user can write, root's ADD must not turn an outside
    file into a SQLite database, nor put -wal/-shm beside it."""
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    (data / (DB_NAME + link)).symlink_to(outside / "victim")
    out = run_plugin("ADD", make_conf(data), container_id="a")
    assert_error(out, 5, "symbolic link", DB_NAME + link)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"
    proc = ipamctl("db", "upgrade", data_dir=data, expect=1)
    assert "symbolic link" in proc.stderr, proc.stderr
    assert (outside / "victim").read_bytes() == b"precious"


def test_another_applications_database_is_refused_untouched(tmp_path):
    """A ``database`` key naming another program's SQLite file: the plugin refuses it as
    ``ipamctl db upgrade`` does (code 7), before creating or switching anything."""
    data = tmp_path / "data"
    data.mkdir()
    other = tmp_path / "app.db"
    conn = sqlite3.connect(str(other))
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    out = run_plugin("ADD", make_conf(data, dict(SUBNET, database=str(other))), container_id="a")
    assert_error(out, 7, "not a host-local-sqlite database", str(other))
    assert other.read_bytes() == before
    # Nothing beside it but our writers' queue file, empty (no -wal, no -shm).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "app.db.lock", "data"]
    assert (tmp_path / "app.db.lock").read_bytes() == b""
    proc = ipamctl("db", "upgrade", database=other, expect=1)
    assert "not a host-local-sqlite database" in proc.stderr
    assert other.read_bytes() == before


@pytest.mark.parametrize("value,path", [
    ("/var/lib/x.db", "/var/lib/x.db"),
    ("rel/x.db", "rel/x.db"),
    ("sqlite:///rel/x.db", "rel/x.db"),
    ("sqlite:////abs/x.db", "/abs/x.db"),
    ("sqlite+pysqlite:///x.db", "x.db"),
    ("sqlite+pysqlite:////abs/x.db", "/abs/x.db"),
    ("postgresql://h/db", None),
    ("postgresql+psycopg://u@h:5432/db", None),
])
def test_one_function_says_what_a_database_value_names(value, path):
    from ipam.store.location import POSTGRESQL, SQLITE, locate

    assert locate(value) == ((SQLITE, path) if path else (POSTGRESQL, locate(value)[1]))


@pytest.mark.parametrize("value", ["sqlite:///", "sqlite://host/x.db",
                                   "sqlite:///x.db?mode=ro", "sqlite:///x.db#frag"])
def test_a_sqlite_url_that_names_no_plain_file_is_refused_alike(tmp_path, value):
    data = tmp_path / "data"
    out = run_plugin("ADD", make_conf(data, dict(SUBNET, database=value)), container_id="a")
    assert_error(out, 7, "invalid SQLite URL")
    proc = ipamctl("db", "upgrade", data_dir=data, database=value, cwd=tmp_path, expect=1)
    assert "invalid SQLite URL" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [data] or not any(tmp_path.glob("*.db"))


# -- a database replaced under a call ---------------------------------------------------
def test_a_database_replaced_while_a_call_queues_takes_its_write(tmp_path, through):
    """Issue 24: an operator holds the writers' queue (``<db>.lock``, so that no call of
    ours writes meanwhile), restores a copy of the database with ``mv``, removes the old
    file's -wal and -shm, and lets go. A call that opened the old file before it queued
    (a plugin process opens it first; the daemon keeps it open across calls) must commit
    into the file now at the path: with ``"export": false`` no mirror file would stop the
    next ADD from handing out its address again."""
    data = tmp_path / "data"
    conf = make_conf(data, dict(SUBNET, export=False, busyTimeout=60))
    assert add_ip(conf, "a") == "10.1.2.2"
    db = str(data / DB_NAME)
    queue = os.open(db + ".lock", os.O_RDWR)
    try:
        fcntl.flock(queue, fcntl.LOCK_EX)
        call = Invocation("ADD", "b", conf)
        call.feed()
        through.wait_queued(db + ".lock", call.proc)
        copy = str(tmp_path / "copy.db")
        source, target = sqlite3.connect(db), sqlite3.connect(copy)
        source.backup(target)  # a consistent copy: what the WAL holds too
        source.close()
        target.close()
        os.replace(copy, db)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(db + suffix)
    finally:
        os.close(queue)
    call.finish()
    assert call.rc == 0 and call.address == "10.1.2.3", call
    assert add_ip(conf, "c") == "10.1.2.4"
    assert leases(data, "mynet") == {"a": "10.1.2.2", "b": "10.1.2.3", "c": "10.1.2.4"}
    assert db_state(db)["integrity"] == [("ok",)]
