"""A power cut between any two writes of ADD, DEL, GC and ``ipamctl release/gc/export``.

The database is fsynced by SQLite (``synchronous=FULL``): a COMMIT is on disk before the
answer is printed. The mirror and the journal (the pending marker) are not fsynced. The
model (``tests/syscall_faults.py``, "power loss") records each command's mirror
operations with strace (the journal's creation and writes, the temporary files, the
``link()`` of an address file, the cursor's ``rename()``, the unlinks) and where its
COMMIT became durable, then builds every state a cut can leave:

- the database before the COMMIT (cut before its sync) or after (cut after it);
- any subset of the mirror operations made before the cut (a file system that journals
  metadata in order keeps a prefix; the subset covers those that promise nothing);
- each new file holding any prefix of its writes, zero-length included (ext4's delayed
  allocation in data=ordered);
- and, where no journal survived, the directory's stamp either as recorded or matching
  (the hint says "unchanged": the guarantee must not rest on it).

Of the states that differ only in which temporary files exist, the one with the most
and the one with the fewest are built. For each: the next call (an ADD for a new
container: a cut kills every container on the node, so the runtime starts new ones),
``ipamctl check --repair``, then ``ipamctl check``, must succeed without a traceback,
with no address held twice, the mirror equal to the database, and the leases either
those before the command or those after it. A lease may be left for an owner that a
file names and the database does not (the container that never got its answer, a
released one whose file outlived the cut): recorded from the file as another writer's
would be, it is a leak until CNI GC or ``ipamctl gc``, never an address
told to two containers.

What must therefore be fsynced: nothing in the mirror for the guarantee "never held
twice" (every container that held a lease died with the node). One thing does need
it: a new address file must never be seen empty at a leased address, where it would
name no one for good, so its data is synced before its ``link()`` (about 0.25 ms per
new file); and the journal's redo takes an empty or cut-short file it wrote for that
write cut short.
"""
import os
import shutil

import pytest
import syscall_faults as sf

pytestmark = [pytest.mark.slow, pytest.mark.strace]

PATHS = sf.POWER_LOSS_PATHS


@pytest.fixture(scope="module")
def power(tmp_path_factory):
    assert shutil.which("strace"), "strace is needed (Debian: apt-get install strace)"
    return sf.PowerLoss(sf.Harness(str(tmp_path_factory.mktemp("power-loss"))))


@pytest.mark.parametrize("name", PATHS)
def test_a_power_cut_between_any_two_writes_is_reconciled(power, name):
    n, problems, leaks = power.run(name, select=lambda state: True)
    assert n, "no crash state built"
    assert not problems, "%d of %d state(s) went wrong:\n\n%s" % (
        len(problems), n, "\n\n".join(problems))


def test_the_journal_goes_only_after_the_commit_is_durable(power):
    """The model's premise, checked on the real calls: every address file is created or
    removed before the COMMIT's sync, and after it only the journal is removed."""
    for name in PATHS:
        rec, _, cases = power.states(name)
        after = rec.ops[rec.commit:]
        assert after and all(op.kind == "unlink" and op.name.startswith(sf.PENDING)
                             for op in after), (name, after)
        before = rec.ops[:rec.commit]
        assert any(op.kind in ("link", "unlink") and sf.is_address(
            os.path.basename(op.dst or op.name)) for op in before), (name, before)
        assert cases
