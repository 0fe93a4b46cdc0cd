"""Every system call of ADD, DEL, GC and ``ipamctl release/gc/import/export`` fails once.

For each path (see ``tests/syscall_faults.py``: the console script or ipamctl run as in
production, from a fresh copy of one starting state), each call it makes from its first
touch of dataDir on, of ``openat``, ``write``, ``pwrite64``, ``rename*``, ``unlink*``,
``link*``, ``mkdir*``, ``fsync``, ``fdatasync`` and ``flock``, is failed by
``strace -e inject=SYSCALL:error=ERRNO:when=N`` with each errno that call can really
return. After each: a clean CNI error object (or ``Error: ...``) or success, no
traceback, no address held twice, the next call succeeds, ``ipamctl check`` is clean
after it, and the leases are exactly what the command asked for.

Faults that reveal a known bug are split out into ``test_known_bug`` (xfail, strict),
so that the other calls keep being checked; fix the bug, then remove its entry.
"""
import shutil

import pytest
import syscall_faults as sf

pytestmark = pytest.mark.slow

PLUGIN_PATHS = ("ADD", "ADD-after-Go", "DEL", "GC")


def _is_wal_commit_sync(call, calls):
    """The COMMIT's sync: the last fdatasync of the WAL's descriptor."""
    wal = [c.result.split()[0] for c in calls
           if c.name == "openat" and (c.path() or "").endswith("-wal")]
    syncs = [c for c in calls if c.name == "fdatasync" and wal and c.args == wal[-1]]
    return bool(syncs) and syncs[-1] is call


def _reads_an_address_file(call, calls):
    """``NetworkDir.read``: an address file opened for reading in the network directory."""
    path = call.path() or ""
    return call.name == "openat" and not call.args.startswith("AT_FDCWD") \
        and "O_CREAT" not in call.args and sf.is_address(path)


class Bug:
    def __init__(self, ident, paths, family, errnos, select, reason):
        self.id, self.paths, self.family, self.errnos = ident, paths, family, errnos
        self.select, self.reason = select, reason

    def covers(self, name, family, err, call, calls):
        return name in self.paths and family == self.family and err in self.errnos \
            and self.select(call, calls)


KNOWN_BUGS = [
    Bug("flock-ENOLCK-is-an-internal-error", PLUGIN_PATHS, "flock", ("ENOLCK",),
        lambda c, calls: True,
        "bug: an flock error other than EWOULDBLOCK escapes as a bare OSError "
        "(writer_lock.acquire re-raises it, writer_lock.poll/_poll does not catch it): "
        "code 999 'internal error: [Errno 37] No locks available', no file named; "
        "expected IoFailure (code 5) naming the lock file"),
    Bug("temporary-file-left-when-its-unlink-fails", ("ADD", "ADD-after-Go"), "unlink",
        ("EIO", "EACCES"), lambda c, calls: sf.TMP_PREFIX in c.args,
        "bug: NetworkDir._discard ignores a failed unlink of the temporary file after "
        "link(), and the stamp is recorded after it, so no later call reconciles: the "
        "file stays until 'check --repair' and 'ipamctl check' reports it (temporary)"),
    Bug("commit-sync-failure-undoes-a-commit-that-lands", ("ADD", "ADD-after-Go"),
        "fdatasync", ("EIO", "ENOSPC"), _is_wal_commit_sync,
        "bug: when the COMMIT's fdatasync of the WAL fails, SQLite reports an error but "
        "the commit frame is already in the WAL; the next process's WAL recovery makes "
        "the lease committed. _repair_quietly meanwhile removed the address file (it "
        "saw no lease) and put the cursor file back, and the repeated ADD returns the "
        "lease without re-creating its file: the lease has no file ('ipamctl check': "
        "missing, and last_reserved_ip.0 wrong), so Go host-local beside us could hand "
        "the address out again. After a failed COMMIT the outcome is unknown: keep the "
        "journal for the next process instead of undoing it"),
    Bug("a-read-error-is-taken-for-no-file", ("DEL", "GC", "ipamctl-release", "ipamctl-gc"),
        "openat", ("EACCES", "ENOSPC", "EIO"), _reads_an_address_file,
        "bug: NetworkDir.read/read_stat turn any OSError into 'no regular file', so a "
        "released lease's file that could not be read is left behind ('left ... not a "
        "regular file'), the release succeeds, and the file names a released owner "
        "for good ('ipamctl check': foreign); a later reconcile adopts it back. Only "
        "ENOENT/ELOOP mean absent; other errors should fail the command or keep the "
        "journal for a later one"),
    Bug("gc-with-nothing-to-release-leaves-the-journal", ("ipamctl-gc",), "unlink",
        ("EIO", "EACCES"), lambda c, calls: sf.is_address(c.path() or "")
        or sf.PENDING in c.args,
        "bug: when 'ipamctl gc --apply' could not remove a released lease's file (or "
        "its journal) it warns and keeps the journal for a later command; but the same "
        "gc run again finds no candidates and returns before holding the network "
        "(admin.gc), so the journal is not replayed: the file stays ('ipamctl check': "
        "stale) and so does the journal, until another writer touches the network"),
    Bug("stderr-EPIPE-fails-the-call", ("ADD-after-Go",), "write", ("EPIPE",),
        lambda c, calls: c.fd == 2,
        "bug: a diagnostic on stderr (reconcile._summarise's print of the adopted "
        "leases) that cannot be written (EPIPE) raises BrokenPipeError inside the "
        "transaction: the ADD rolls back and answers code 999 'internal error: [Errno "
        "32] Broken pipe'. Diagnostics should be best effort"),
    Bug("stdout-EPIPE-traceback", ("ADD", "ADD-after-Go"), "write", ("EPIPE",),
        lambda c, calls: c.fd == 1,
        "bug: a failed write of the result (EPIPE: the runtime stopped reading) raises "
        "BrokenPipeError out of cni.main (stdout.write/flush are unguarded) and the "
        "console script prints a traceback"),
]


def _known(name, family, err):
    bugs = [b for b in KNOWN_BUGS if name in b.paths and b.family == family
            and err in b.errnos]
    return lambda call, calls: any(b.select(call, calls) for b in bugs)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    assert shutil.which("strace"), "strace is needed (Debian: apt-get install strace)"
    return sf.Harness(str(tmp_path_factory.mktemp("syscall-faults")))


ALL = [(name, family, err) for name in sf.PATHS for family, (_, errs) in sf.FAMILIES.items()
       for err in errs]


@pytest.mark.parametrize("name,family,err", ALL, ids=["-".join(x) for x in ALL])
def test_every_call_fails_cleanly(harness, name, family, err):
    known = _known(name, family, err)
    n, problems = harness.run(name, family, err,
                              select=lambda call, calls: not known(call, calls))
    assert not problems, "%d of %d fault(s) went wrong:\n\n%s" % (
        len(problems), n, "\n\n".join(problems))


@pytest.mark.parametrize("bug", [pytest.param(b, id=b.id, marks=pytest.mark.xfail(
    strict=True, reason=b.reason)) for b in KNOWN_BUGS])
def test_known_bug(harness, bug):
    ran, problems = 0, []
    for name in bug.paths:
        for err in bug.errnos:
            n, p = harness.run(name, bug.family, err, select=bug.select)
            ran += n
            problems += p
    assert ran, "the bug's calls are no longer made: remove the entry"
    assert not problems, "\n\n".join(problems)


# What each path must make, at the least: the enumeration is of real calls, never empty.
AT_LEAST = {
    "ADD": {"openat": 8, "write": 2, "pwrite64": 4, "rename": 1, "link": 1, "unlink": 2,
            "fdatasync": 1, "flock": 2},
    "ADD-after-Go": {"openat": 8, "link": 1, "rename": 1, "fdatasync": 1, "flock": 2},
    "DEL": {"openat": 8, "write": 1, "unlink": 2, "fdatasync": 1, "flock": 2},
    "GC": {"openat": 8, "unlink": 3, "fdatasync": 1, "flock": 2},
    "ipamctl-release": {"openat": 8, "unlink": 2, "fdatasync": 1, "flock": 2},
    "ipamctl-gc": {"openat": 8, "unlink": 3, "fdatasync": 1, "flock": 2},
    "ipamctl-import": {"openat": 8, "pwrite64": 4, "fdatasync": 1, "flock": 2},
    "ipamctl-export": {"openat": 8, "link": 1, "rename": 1, "unlink": 3, "fdatasync": 1,
                       "flock": 2},
}


def test_each_path_is_traced_from_its_first_touch_of_the_data_dir(harness):
    table, faults = sf.counts(harness)
    short = {name: {fam: (table[name][fam], least) for fam, least in want.items()
                    if table[name][fam] < least}
             for name, want in AT_LEAST.items()}
    assert not any(short.values()), short
    # Every call of a path is one fault per errno: the figures in README's Guarantees.
    assert all(faults[name] >= 100 for name in sf.PATHS), faults
