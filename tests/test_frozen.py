"""ipam.install.frozen, in process, on stand-in builds (a BUILD-INFO and a few files): the
copies, links and pruning that install-plugin performs from a self-contained build. A
process running from a copy is stood for by what it leaves for the installer to see:
a shared flock on the copy's lock file (taken here by the test), or an entry of /proc
(a stand-in directory). The real build and its processes are tests/test_dist.py's."""
import fcntl
import json
import os
import sys

from ipam.install import frozen, plugin_dirs


def fake_build(path, digest, lock=False):
    """A stand-in build; ``lock``: with the lock file that make dist writes since
    install-plugin keeps copies in use (older builds have none)."""
    os.makedirs(os.path.join(path, "lib"))
    with open(os.path.join(path, frozen.INFO), "w") as f:
        json.dump({"version": "1.2.3", "digest": digest}, f)
    for name in (frozen.PLUGIN, "lib/x.pyc") + ((frozen.IN_USE,) if lock else ()):
        with open(os.path.join(path, name), "w") as f:
            f.write(digest)
    return str(path)


def hold(copy):
    """What a process running from ``copy`` holds from its start: a shared flock on
    its lock file (an open file description of its own, as another process's is)."""
    fd = os.open(os.path.join(copy, frozen.IN_USE), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return fd


def test_is_ours_only_for_an_installed_copy_s_plugin():
    assert frozen.is_ours("host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/host_local_sqlite")
    assert not frozen.is_ours("/opt/cni/bin/host-local-sqlite.d/1.2.3-a/host_local_sqlite")
    assert not frozen.is_ours("host-local-sqlite.d/1.2.3-a/ipamctl")
    assert not frozen.is_ours("../host-local-sqlite.d/x/host_local_sqlite/..")


def test_install_copies_links_reuses_and_prunes(tmp_path):
    a = fake_build(tmp_path / "a", "a" * 64)
    b = fake_build(tmp_path / "b", "b" * 64)
    c = fake_build(tmp_path / "c", "c" * 64)
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    first = frozen.install(bin_dir, "host-local-sqlite", a)
    assert first["link"] == "host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/host_local_sqlite"
    assert os.readlink(os.path.join(bin_dir, "host-local-sqlite")) == first["link"]
    with open(os.path.join(bin_dir, "host-local-sqlite")) as f:
        assert f.read() == "a" * 64  # through the link, the copy's plugin
    assert frozen.install(bin_dir, "host-local-sqlite", a)["reused"] is True
    # The drop-in name keeps the first copy in use while host-local-sqlite moves on.
    frozen.install(bin_dir, "host-local", a)
    assert frozen.install(bin_dir, "host-local-sqlite", b)["removed"] == []
    assert frozen.install(bin_dir, "host-local-sqlite", c)["removed"] == []
    assert sorted(os.listdir(os.path.join(bin_dir, frozen.BUILDS))) == [
        "1.2.3-aaaaaaaaaaaa", "1.2.3-bbbbbbbbbbbb", "1.2.3-cccccccccccc", frozen.CURRENT]
    # Once no link uses it and it was not the one just replaced, a copy goes.
    removed = frozen.install(bin_dir, "host-local", c)["removed"]
    assert [os.path.basename(p) for p in removed] == ["1.2.3-bbbbbbbbbbbb"]
    assert not [n for n in os.listdir(bin_dir) if ".tmp-" in n]


def test_an_interrupted_copy_is_cleared(tmp_path):
    a = fake_build(tmp_path / "a", "a" * 64)
    bin_dir = str(tmp_path / "bin")
    leftover = os.path.join(bin_dir, frozen.BUILDS, "1.2.3-aaaaaaaaaaaa.tmp-99999")
    os.makedirs(leftover)
    frozen.install(bin_dir, "host-local-sqlite", a)
    assert sorted(os.listdir(os.path.join(bin_dir, frozen.BUILDS))) == [
        "1.2.3-aaaaaaaaaaaa", frozen.CURRENT]


def test_a_link_to_an_installed_copy_is_not_foreign(tmp_path):
    a = fake_build(tmp_path / "a", "a" * 64)
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    frozen.install(bin_dir, "host-local", a)
    assert plugin_dirs.foreign(str(tmp_path), "/bin/host-local") is None
    os.symlink("/usr/lib/cni/host-local", os.path.join(bin_dir, "other"))
    assert "symbolic link" in plugin_dirs.foreign(str(tmp_path), "/bin/other").what


def test_only_copies_are_pruned_and_any_link_keeps_its_copy(tmp_path):
    """A copy that the tarball's ipamctl link uses stays; an entry of the copies'
    directory that is not a copy (an operator's file) is never removed."""
    a = fake_build(tmp_path / "a", "a" * 64)
    b = fake_build(tmp_path / "b", "b" * 64)
    c = fake_build(tmp_path / "c", "c" * 64)
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    frozen.install(bin_dir, "host-local-sqlite", a)
    os.symlink("host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/ipamctl",
               os.path.join(bin_dir, "ipamctl"))
    notes = os.path.join(bin_dir, frozen.BUILDS, "NOTES")
    with open(notes, "w") as f:
        f.write("mine")
    frozen.install(bin_dir, "host-local-sqlite", b)
    assert frozen.install(bin_dir, "host-local-sqlite", c)["removed"] == []  # a: ipamctl's
    assert frozen.install(bin_dir, "host-local-sqlite", c)["removed"] == [
        os.path.join(bin_dir, frozen.BUILDS, "1.2.3-bbbbbbbbbbbb")]
    assert os.path.isfile(notes)
    assert frozen.copy_of("host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/ipamctl") == \
        "1.2.3-aaaaaaaaaaaa"
    assert not frozen.is_ours("host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/ipamctl")



def test_a_copy_whose_lock_a_process_holds_is_kept_until_it_ends(tmp_path, monkeypatch):
    """The issue's sequence: a call from copy a still runs (it holds a's lock) while b,
    then c are installed: a stays, reported in use; once the call ended, the next
    install removes it. A copy being removed is first renamed away, under its lock."""
    a, b, c = (fake_build(tmp_path / n, n * 64, lock=True) for n in "abc")
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    copy_a = frozen.install(bin_dir, "host-local-sqlite", a)["build"]
    call = hold(copy_a)
    try:
        assert frozen.install(bin_dir, "host-local-sqlite", b)["in_use"] == []  # previous
        report = frozen.install(bin_dir, "host-local-sqlite", c)
        assert (report["removed"], report["in_use"]) == ([], [copy_a])
        assert frozen.install(bin_dir, "host-local-sqlite", b)["in_use"] == [copy_a]
        with open(os.path.join(copy_a, "lib/x.pyc")) as f:
            assert f.read() == "a" * 64  # all of it, not half
    finally:
        os.close(call)
    seen = []

    def rmtree(path, ignore_errors=False):  # what a process starting from it would meet
        try:
            os.close(hold(path))
        except BlockingIOError:
            seen.append((path, os.path.exists(copy_a)))
        remove(path, ignore_errors=ignore_errors)

    remove = frozen.shutil.rmtree
    monkeypatch.setattr(frozen.shutil, "rmtree", rmtree)
    report = frozen.install(bin_dir, "host-local-sqlite", c)  # b: previous
    assert (report["removed"], report["in_use"]) == ([copy_a], [])
    assert seen == [("%s.tmp-%d" % (copy_a, os.getpid()), False)]  # renamed, locked
    assert sorted(os.listdir(os.path.join(bin_dir, frozen.BUILDS))) == [
        "1.2.3-bbbbbbbbbbbb", "1.2.3-cccccccccccc", frozen.CURRENT]


def test_a_leftover_of_an_interrupted_removal_is_removed_unless_in_use(tmp_path):
    """A copy renamed away whose removal stopped half-way is a leftover like that of an
    interrupted copy: removed next time, on the same terms."""
    a = fake_build(tmp_path / "a", "a" * 64, lock=True)
    bin_dir = str(tmp_path / "bin")
    builds = os.path.join(bin_dir, frozen.BUILDS)
    leftover = fake_build(os.path.join(builds, "1.2.3-bbbbbbbbbbbb.tmp-77"), "b" * 64,
                          lock=True)
    call = hold(leftover)
    try:
        assert frozen.install(bin_dir, "host-local-sqlite", a)["in_use"] == [leftover]
    finally:
        os.close(call)
    assert frozen.install(bin_dir, "host-local-sqlite", a)["removed"] == [leftover]
    assert sorted(os.listdir(builds)) == ["1.2.3-aaaaaaaaaaaa", frozen.CURRENT]


def test_a_copy_is_kept_while_proc_shows_a_process_running_from_it(tmp_path):
    """A process whose executable is one of a copy's, as /proc/PID/exe shows it (a
    stand-in /proc, whose exe links resolve as the kernel's do), keeps the copy: one
    without a lock file (installed by a version before it), and one whose lock is not
    held yet (the instant between a process's exec and its flock). With none, a copy
    without a lock file goes, as it always did."""
    a = fake_build(tmp_path / "a", "a" * 64)
    b, c = (fake_build(tmp_path / n, n * 64, lock=True) for n in "bc")
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)  # not a process: not read
    (proc / "4243").mkdir()  # a kernel thread: no exe
    (proc / "4242").mkdir()
    exe = proc / "4242" / "exe"

    def install(build):
        report = frozen.install(bin_dir, "host-local-sqlite", build, proc=str(proc))
        return [os.path.basename(p) for p in report["removed"]], \
            [os.path.basename(p) for p in report["in_use"]]

    copy_a = frozen.install(bin_dir, "host-local-sqlite", a)["build"]
    exe.symlink_to(os.path.join(copy_a, frozen.PLUGIN))
    copy_b = frozen.install(bin_dir, "host-local-sqlite", b)["build"]
    assert install(c) == ([], ["1.2.3-aaaaaaaaaaaa"])
    exe.unlink()
    exe.symlink_to(os.path.join(copy_b, frozen.PLUGIN))
    assert install(c) == (["1.2.3-aaaaaaaaaaaa"], ["1.2.3-bbbbbbbbbbbb"])
    exe.unlink()
    assert install(c) == (["1.2.3-bbbbbbbbbbbb"], [])


def test_proc_is_read_as_the_kernel_shows_it():
    """The real /proc: this test's own interpreter is among what runs."""
    st = os.stat(sys.executable)
    assert (st.st_dev, st.st_ino) in frozen.executables("/proc")
    assert frozen.executables("/nonexistent") == set()


def test_current_links_the_copy_installed_last(tmp_path):
    """DIR/host-local-sqlite.d/current/ipamctl: a path to ipamctl that stays, whichever
    build and name was installed last."""
    a, b = (fake_build(tmp_path / n, n * 64) for n in "ab")
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    current = os.path.join(bin_dir, frozen.BUILDS, frozen.CURRENT)
    frozen.install(bin_dir, "host-local-sqlite", a)
    assert os.readlink(current) == "1.2.3-aaaaaaaaaaaa"  # relative, inside BUILDS
    frozen.install(bin_dir, "host-local", b)
    assert os.readlink(current) == "1.2.3-bbbbbbbbbbbb"
    before = os.lstat(current).st_ino
    frozen.install(bin_dir, "host-local", b)  # again: the link is not even replaced
    assert os.lstat(current).st_ino == before
    with open(os.path.join(current, frozen.PLUGIN)) as f:
        assert f.read() == "b" * 64
    assert not [n for n in os.listdir(os.path.dirname(current)) if ".tmp-" in n]


def test_a_launcher_over_a_build_removes_what_the_build_leaves(tmp_path):
    """Once a launcher took NAME, the copies no other NAME links to go (the one NAME used
    just before too), with the tarball's ipamctl link and current, then the emptied
    host-local-sqlite.d/ itself; a copy another NAME uses stays, with its links."""
    a, b = (fake_build(tmp_path / n, n * 64) for n in "ab")
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    frozen.install(bin_dir, "host-local", a)
    frozen.install(bin_dir, "host-local-sqlite", b)
    os.symlink("host-local-sqlite.d/1.2.3-bbbbbbbbbbbb/ipamctl",
               os.path.join(bin_dir, "ipamctl"))
    os.unlink(os.path.join(bin_dir, "host-local-sqlite"))  # a launcher took the name
    with open(os.path.join(bin_dir, "host-local-sqlite"), "w") as f:
        f.write("launcher")
    report = frozen.remove_unused(bin_dir)
    builds = os.path.join(bin_dir, frozen.BUILDS)
    assert report["removed"] == [os.path.join(builds, "1.2.3-bbbbbbbbbbbb")]
    assert report["bytes"] > 0 and report["in_use"] == []
    assert report["links"] == [os.path.join(bin_dir, "ipamctl"),
                               os.path.join(builds, frozen.CURRENT)]
    assert sorted(os.listdir(builds)) == ["1.2.3-aaaaaaaaaaaa"]  # host-local's
    assert report["directory"] is False

    os.unlink(os.path.join(bin_dir, "host-local"))  # and the drop-in's name too
    report = frozen.remove_unused(bin_dir)
    assert report["removed"] == [os.path.join(builds, "1.2.3-aaaaaaaaaaaa")]
    assert report["directory"] is True and sorted(os.listdir(bin_dir)) == ["host-local-sqlite"]
    assert frozen.remove_unused(bin_dir)["removed"] == []  # nothing there: nothing to do


def test_a_launcher_over_a_build_keeps_a_copy_in_use_and_its_links(tmp_path):
    a = fake_build(tmp_path / "a", "a" * 64, lock=True)
    bin_dir = str(tmp_path / "bin")
    os.mkdir(bin_dir)
    copy = frozen.install(bin_dir, "host-local-sqlite", a)["build"]
    os.unlink(os.path.join(bin_dir, "host-local-sqlite"))
    call = hold(copy)
    try:
        report = frozen.remove_unused(bin_dir)
        assert (report["removed"], report["in_use"], report["links"]) == ([], [copy], [])
        assert os.path.isdir(os.path.join(bin_dir, frozen.BUILDS, frozen.CURRENT))
    finally:
        os.close(call)
    report = frozen.remove_unused(bin_dir)  # the call ended: the next install removes it
    assert report["removed"] == [copy] and report["directory"] is True
