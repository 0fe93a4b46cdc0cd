"""ipam.frozen, in process, on stand-in builds (a BUILD-INFO and two files): the copies,
links and pruning that install-plugin performs from a self-contained build. The real
build is tests/test_dist.py's."""
import json
import os

from ipam import frozen, plugin_dirs


def fake_build(path, digest):
    os.makedirs(os.path.join(path, "lib"))
    with open(os.path.join(path, frozen.INFO), "w") as f:
        json.dump({"version": "1.2.3", "digest": digest}, f)
    for name in (frozen.PLUGIN, "lib/x.pyc"):
        with open(os.path.join(path, name), "w") as f:
            f.write(digest)
    return str(path)


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
        "1.2.3-aaaaaaaaaaaa", "1.2.3-bbbbbbbbbbbb", "1.2.3-cccccccccccc"]
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
    assert sorted(os.listdir(os.path.join(bin_dir, frozen.BUILDS))) == ["1.2.3-aaaaaaaaaaaa"]


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

