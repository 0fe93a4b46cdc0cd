"""Every system call of ADD, DEL, GC and ``ipamctl release/gc/import/export`` fails once.

For each path (see ``tests/syscall_faults.py``: the console script or ipamctl run as in
production, from a fresh copy of one starting state), each call it makes from its first
touch of dataDir on, of ``openat``, ``write``, ``pwrite64``, ``rename*``, ``unlink*``,
``link*``, ``mkdir*``, ``fsync``, ``fdatasync`` and ``flock``, is failed by
``strace -e inject=SYSCALL:error=ERRNO:when=N`` with each errno that call can really
return. After each: a clean CNI error object (or ``Error: ...``) or success, no
traceback, no address held twice, the next call succeeds, ``ipamctl check`` is clean
after it, and the leases are exactly what the command asked for.

The first run found eight bugs (an flock ENOLCK as an internal error, a stray temporary
file, a failed COMMIT sync undone although it landed, a read error taken for an absent
file, a gc journal never replayed, EPIPE on stderr failing the call and on stdout
printing a traceback, an empty address file after a power cut): all fixed, and every
call of theirs is checked here with the rest.
"""
import shutil

import pytest
import syscall_faults as sf

pytestmark = [pytest.mark.slow, pytest.mark.strace]

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    assert shutil.which("strace"), "strace is needed (Debian: apt-get install strace)"
    return sf.Harness(str(tmp_path_factory.mktemp("syscall-faults")))


ALL = [(name, family, err) for name in sf.PATHS for family, (_, errs) in sf.FAMILIES.items()
       for err in errs]


@pytest.mark.parametrize("name,family,err", ALL, ids=["-".join(x) for x in ALL])
def test_every_call_fails_cleanly(harness, name, family, err):
    n, problems = harness.run(name, family, err, select=lambda call, calls: True)
    assert not problems, "%d of %d fault(s) went wrong:\n\n%s" % (
        len(problems), n, "\n\n".join(problems))


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
    # Every call of a path is one fault per errno: the figures in docs/guarantees.md.
    assert all(faults[name] >= 100 for name in sf.PATHS), faults
