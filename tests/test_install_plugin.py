"""``ipamctl install-plugin`` tells the truth about what will run: each runtime's plugin
search order (ipam.install.plugin_dirs, read from real config files in a temporary root), the
refusal to replace a file that is not ours, ``--force`` keeping it (a real dpkg-divert on
the temporary root), and the warnings when a runtime would run another file."""
import json
import os
import shutil
import stat
import subprocess
import sys
import traceback

import pytest
from click.testing import CliRunner
from helpers import wait_until

from host_local_sqlite_cli.main import cli
from ipam.install import containerd_config, launcher, native, plugin_dirs

GO_HOST_LOCAL = "/usr/lib/cni/host-local"  # Debian's containernetworking-plugins
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- helpers --------------------------------------------------------------------------
def put(root, path, text="", mode=0o644):
    """Write ``text`` (str or bytes) at ``path`` inside ``root``; returns the real path."""
    real = root / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes(text if isinstance(text, bytes) else text.encode())
    real.chmod(mode)
    return real


def go_binary(root, path):
    """A real executable standing for Go's plugin: Debian's host-local when installed
    (CI installs it), else this system's ``true``."""
    if IN_CI:
        assert os.path.isfile(GO_HOST_LOCAL), "CI installs containernetworking-plugins"
    source = GO_HOST_LOCAL if os.path.isfile(GO_HOST_LOCAL) else shutil.which("true")
    with open(source, "rb") as f:
        return put(root, path, f.read(), 0o755)


def kind_of_go_binary():
    return "a Go executable" if os.path.isfile(GO_HOST_LOCAL) else "an ELF executable"


def dpkg_package(root, name, *paths):
    """A package's file list as dpkg keeps it: /var/lib/dpkg/info/<name>.list."""
    dirs = {os.path.dirname(p) for p in paths}
    put(root, "/var/lib/dpkg/info/%s.list" % name,
        "/.\n" + "".join(d + "\n" for d in sorted(dirs)) + "".join(p + "\n" for p in paths))


def program(root, name, version="4.3.1"):
    """Make a runtime present the way a package does: its program in /usr/bin."""
    put(root, "/usr/bin/" + name, "#!/bin/sh\necho %s version %s\n" % (name, version), 0o755)


def by_name(root, **env):
    return {r.name: r for r in plugin_dirs.runtimes(str(root), env=env)}


@pytest.fixture
def install(monkeypatch):
    """``install(root, *args, expect=0)``: ipamctl -o json install-plugin --root ROOT
    ARGS in process; returns (JSON or None, stderr). ``client``: the --client given
    ("python" unless said: what these tests check holds for either, and the native
    client's own tests below say when there is one; None: none given)."""
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)

    def run(root, *args, expect=0, output="json", client="python"):
        result = CliRunner().invoke(cli, ["-o", output, "install-plugin", "--root",
                                          str(root), *args,
                                          *(["--client", client] if client else [])])
        exc = result.exception
        if exc is not None and not isinstance(exc, SystemExit):
            raise AssertionError("".join(traceback.format_exception(exc)))
        assert result.exit_code == expect, (result.stdout, result.stderr)
        if output == "json" and expect == 0:
            return json.loads(result.stdout), result.stderr
        return result.stdout, result.stderr
    return run


def is_launcher(path):
    return plugin_dirs.MARKER in path.read_bytes()


# -- search orders --------------------------------------------------------------------
def test_the_marker_is_the_launchers_own_line():
    assert plugin_dirs.MARKER in launcher.render(paths=[]).encode()


def test_nothing_present_in_an_empty_root(tmp_path):
    found = plugin_dirs.runtimes(str(tmp_path), env={})
    assert [(r.name, r.present) for r in found] == [
        ("podman", False), ("containerd", False), ("crio", False), ("nomad", False)]
    assert [r.dirs for r in found] == [plugin_dirs.PODMAN_DIRS, ["/opt/cni/bin"],
                                       ["/opt/cni/bin"], ["/opt/cni/bin"]]


def test_podman_4_finds_debians_go_host_local_before_opt_cni_bin(tmp_path):
    program(tmp_path, "podman")
    go_binary(tmp_path, "/usr/lib/cni/host-local")
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    put(tmp_path, "/opt/cni/bin/host-local", "#!/bin/sh\n", 0o755)
    podman = by_name(tmp_path)["podman"]
    assert podman.present and podman.configs == [] and podman.errors == []
    assert podman.dirs == ["/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni",
                           "/usr/lib/cni", "/opt/cni/bin"]
    assert podman.runs("host-local") == "/usr/lib/cni/host-local"
    assert podman.runs("bridge") is None
    # libcni takes the first regular file: a directory of that name does not count.
    (tmp_path / "usr/local/libexec/cni/host-local").mkdir(parents=True)
    assert podman.runs("host-local") == "/usr/lib/cni/host-local"


def test_podman_reads_containers_conf_files_in_order(tmp_path):
    put(tmp_path, "/usr/share/containers/containers.conf",
        '[network]\ncni_plugin_dirs = ["/vendor"]\n')
    put(tmp_path, "/etc/containers/containers.conf",
        '[network]\ncni_plugin_dirs = ["/admin", "/opt/cni/bin/"]\n')
    put(tmp_path, "/etc/containers/containers.conf.d/20-dirs.conf",
        '[network]\ncni_plugin_dirs = ["/dropin20"]\n')
    put(tmp_path, "/etc/containers/containers.conf.d/10-other.conf",
        '[engine]\nevents_logger = "file"\n')
    put(tmp_path, "/etc/containers/containers.conf.d/README", "not read: no .conf")
    podman = by_name(tmp_path)["podman"]
    assert podman.present and podman.note is None
    assert podman.configs == ["/usr/share/containers/containers.conf",
                              "/etc/containers/containers.conf",
                              "/etc/containers/containers.conf.d/10-other.conf",
                              "/etc/containers/containers.conf.d/20-dirs.conf"]
    assert podman.dirs == ["/dropin20"]

    (tmp_path / "etc/containers/containers.conf.d/20-dirs.conf").unlink()
    assert by_name(tmp_path)["podman"].dirs == ["/admin", "/opt/cni/bin"]  # normalized

    # CONTAINERS_CONF names the only file read.
    put(tmp_path, "/elsewhere.conf", '[network]\nnetwork_backend = "netavark"\n')
    podman = by_name(tmp_path, CONTAINERS_CONF="/elsewhere.conf")["podman"]
    assert podman.configs == ["/elsewhere.conf"] and podman.dirs == plugin_dirs.PODMAN_DIRS
    assert podman.note == '/elsewhere.conf sets network_backend = "netavark": no CNI plugin runs'


def test_podman_5_runs_no_cni_plugin(tmp_path, install):
    program(tmp_path, "podman", "5.4.2")
    go_binary(tmp_path, "/usr/lib/cni/host-local")
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    podman = by_name(tmp_path)["podman"]
    assert podman.present and podman.note == (
        "%s/usr/bin/podman is podman 5: no CNI plugin runs (netavark only)" % tmp_path)
    info, stderr = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    assert info["warnings"] == [] and stderr == ""
    assert info["runtimes"][0]["note"] == podman.note


@pytest.mark.parametrize("config, dirs", [
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nbin_dir = "/usr/lib/cni"\n',
     ["/usr/lib/cni"]),
    ('[plugins.cri.cni]\nbin_dir = "/v1/bin"\n', ["/v1/bin"]),
    ('version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\n'
     'bin_dirs = ["/a", "/opt/cni/bin"]\n', ["/a", "/opt/cni/bin"]),
    ('version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\nbin_dir = "/b"\n', ["/b"]),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "x"\n',
     ["/opt/cni/bin"]),
])
def test_containerd_cri_bin_dir_in_each_config_version(tmp_path, config, dirs):
    put(tmp_path, "/etc/containerd/config.toml", config)
    containerd = by_name(tmp_path)["containerd"]
    assert containerd.present and containerd.dirs == dirs and containerd.note is None
    assert containerd.configs == ["/etc/containerd/config.toml"]


def test_containerd_with_cri_disabled_runs_no_plugin(tmp_path):
    put(tmp_path, "/etc/containerd/config.toml", 'disabled_plugins = ["cri"]\n')  # Docker's
    go_binary(tmp_path, "/opt/cni/bin/host-local")
    containerd = by_name(tmp_path)["containerd"]
    assert containerd.present and "disables the CRI plugin" in containerd.note
    assert plugin_dirs.warnings(str(tmp_path), "/usr/lib/cni", "host-local",
                                [containerd]) == []


def test_crio_reads_its_drop_ins_after_crio_conf(tmp_path):
    put(tmp_path, "/etc/crio/crio.conf", '[crio.network]\nplugin_dirs = ["/opt/cni/bin/"]\n')
    crio = by_name(tmp_path)["crio"]
    assert crio.present and crio.dirs == ["/opt/cni/bin"]
    put(tmp_path, "/etc/crio/crio.conf.d/10-debian.conf",
        '[crio.network]\nplugin_dirs = ["/usr/lib/cni/", "/opt/cni/bin/"]\n')
    put(tmp_path, "/etc/crio/crio.conf.d/20-runtime.conf", '[crio.runtime]\nx = 1\n')
    crio = by_name(tmp_path)["crio"]
    assert crio.dirs == ["/usr/lib/cni", "/opt/cni/bin"]
    assert crio.configs[1:] == ["/etc/crio/crio.conf.d/10-debian.conf",
                                "/etc/crio/crio.conf.d/20-runtime.conf"]


def test_nomad_cni_path_from_hcl_and_json(tmp_path):
    program(tmp_path, "nomad")
    nomad = by_name(tmp_path)["nomad"]
    assert nomad.present and nomad.dirs == ["/opt/cni/bin"] and nomad.configs == []
    put(tmp_path, "/etc/nomad.d/client.hcl",
        'client {\n  enabled = true\n  # cni_path = "/commented/out"\n'
        '  cni_path = "/usr/lib/cni:/opt/cni/bin"\n}\n')
    assert by_name(tmp_path)["nomad"].dirs == ["/usr/lib/cni", "/opt/cni/bin"]
    put(tmp_path, "/etc/nomad.d/zz.json", '{"client": {\n  "cni_path": "/j"\n}}\n')
    nomad = by_name(tmp_path)["nomad"]
    assert nomad.dirs == ["/j"]
    assert nomad.configs == ["/etc/nomad.d/client.hcl", "/etc/nomad.d/zz.json"]


def test_unreadable_config_files_are_reported_never_fatal(tmp_path, install):
    put(tmp_path, "/etc/containers/containers.conf", "[network\ncni_plugin_dirs = 3\n")
    put(tmp_path, "/etc/containerd/config.toml", b"version = \xff\n")
    put(tmp_path, "/etc/crio/crio.conf", "[crio.network]\nplugin_dirs = /opt\n")
    put(tmp_path, "/etc/nomad.d/client.hcl", b"\xff\xfe cni_path\n")
    found = by_name(tmp_path)
    assert all(r.present and len(r.errors) == 1 for r in found.values()), found
    assert found["podman"].errors[0].startswith("cannot read /etc/containers/containers.conf (")
    assert [r.dirs for r in found.values()] == [plugin_dirs.PODMAN_DIRS, ["/opt/cni/bin"],
                                                ["/opt/cni/bin"], ["/opt/cni/bin"]]
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    info, stderr = install(tmp_path)
    assert sorted(w.split(":")[0] for w in info["warnings"]) == [
        "containerd", "crio", "nomad", "podman"]
    assert all("its settings are ignored here" in w for w in info["warnings"])
    assert stderr.count("warning: ") == 4
    assert {r["name"]: r["runs"] for r in info["runtimes"]} == {
        name: "/opt/cni/bin/host-local-sqlite" for name in found}


# -- the containerd that runs ---------------------------------------------------------
def test_containerds_config_flag_in_every_form_go_takes():
    flag = containerd_config.config_flag
    assert flag([]) is None and flag(["--log-level", "debug"]) is None
    assert flag(["--config", "/a"]) == flag(["--config=/a"]) == "/a"
    assert flag(["-c", "b.toml"]) == flag(["-c=b.toml"]) == flag(["-config", "b.toml"]) == "b.toml"
    assert flag(["-c", "/a", "--address", "/s", "--config=/z"]) == "/z"  # the last wins
    assert flag(["--config"]) is None and flag(["--", "--config", "/a"]) is None


def containerd_toml(tmp_path, bin_dir, name="ctd"):
    """A config for a private containerd (cri-facts.md): its own root, state and
    sockets under ``tmp_path/name``, the CRI plugin's bin_dir ``bin_dir``."""
    home = tmp_path / name
    home.mkdir()
    (home / "net.d").mkdir()
    skip = ["io.containerd.snapshotter.v1." + s for s in ("aufs", "btrfs", "zfs", "devmapper")]
    skip += ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
    text = (
        'version = 2\nroot = "%(h)s/root"\nstate = "%(h)s/state"\ndisabled_plugins = %(skip)s\n'
        '[grpc]\naddress = "%(h)s/c.sock"\n[ttrpc]\naddress = "%(h)s/c.sock.ttrpc"\n'
        '[plugins."io.containerd.internal.v1.opt"]\npath = "%(h)s/opt"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\nstream_server_address = "127.0.0.1"\n'
        'stream_server_port = "0"\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
        'bin_dir = "%(bin)s"\nconf_dir = "%(h)s/net.d"\n'
        % {"h": home, "skip": json.dumps(skip), "bin": bin_dir})
    (home / "config.toml").write_text(text)
    return home


@pytest.fixture
def containerd():
    """``containerd(home, *flags)``: a real containerd run with ``flags`` from ``home``,
    until its gRPC socket listens (it has read its config); stopped after the test."""
    if shutil.which("containerd") is None or os.geteuid() != 0:
        assert not IN_CI, "CI runs as root and installs containerd"
        pytest.skip("needs root and containerd (Debian: apt-get install containerd)")
    started = []

    def start(home, *flags):
        log = open(home / "containerd.log", "wb")
        proc = subprocess.Popen(["containerd", *flags], cwd=home, stdout=log, stderr=log)
        started.append((proc, log))
        wait_until(lambda: (home / "c.sock").exists() or proc.poll() is not None,
                   "containerd to listen on %s" % (home / "c.sock"), timeout=30)
        assert proc.poll() is None, (home / "containerd.log").read_text()
        return proc
    yield start
    for proc, log in started:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def containerd_of(pid, **kw):
    """The runtime found for the containerd process ``pid`` (others may run here)."""
    found = [r for r in plugin_dirs.runtimes("/", env={}, **kw)
             if r.name == "containerd" and r.pid == pid]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.root
def test_containerd_is_read_from_the_config_it_runs_with(tmp_path, containerd):
    """Each running containerd is checked against its own --config, in each form, a
    relative one against its working directory; the warnings name the process."""
    bin_a, bin_b = tmp_path / "bin-a", tmp_path / "bin-b"
    bin_a.mkdir()
    bin_b.mkdir()
    one = containerd_toml(tmp_path, bin_a, "one")
    two = containerd_toml(tmp_path, bin_b, "two")
    first = containerd(one, "--config", str(one / "config.toml"))
    second = containerd(two, "-c", "config.toml")  # relative: its cwd is two/
    runtime = containerd_of(first.pid)
    assert runtime.dirs == [str(bin_a)] and runtime.present and runtime.note is None
    assert runtime.configs == [str(one / "config.toml")] and runtime.errors == []
    assert runtime.root == "/proc/%d/root" % first.pid
    assert containerd_of(second.pid).dirs == [str(bin_b)]
    assert containerd_of(second.pid).configs == [str(two / "config.toml")]

    result = CliRunner().invoke(cli, ["-o", "json", "install-plugin", str(bin_b)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    mine = [w for w in info["warnings"] if w.startswith("containerd (pid %d," % first.pid)]
    assert mine == ["containerd (pid %d, %s/config.toml) does not search %s (it searches "
                    "%s): it would run no host-local-sqlite at all"
                    % (first.pid, one, bin_b, bin_a)]
    assert not [w for w in info["warnings"]
                if w.startswith("containerd (pid %d," % second.pid)]
    several = [w for w in info["warnings"] if "containerd processes run" in w]
    assert len(several) == 1  # and each is named
    assert "containerd (pid %d, %s/config.toml)" % (second.pid, two) in several[0]
    reports = {r["pid"]: r for r in info["runtimes"] if r["name"] == "containerd"}
    assert reports[second.pid]["runs"] == "%s/host-local-sqlite" % bin_b
    assert reports[first.pid]["runs"] is None

    second.terminate()
    second.wait(timeout=30)
    third = containerd(two, "--config=%s" % (two / "config.toml"))
    assert containerd_of(third.pid).dirs == [str(bin_b)]


@pytest.mark.root
def test_containerd_config_names_the_file_to_read(tmp_path, containerd, install):
    """--containerd-config: that file alone, whatever runs (here one on another bin_dir);
    missing, it says so."""
    (tmp_path / "bin").mkdir()
    running = containerd_toml(tmp_path, tmp_path / "elsewhere", "running")
    containerd(running, "--config", str(running / "config.toml"))
    put(tmp_path, "/k3s/config.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nbin_dir = "%s"\n'
        % (tmp_path / "bin"))
    result = CliRunner().invoke(cli, ["-o", "json", "install-plugin", str(tmp_path / "bin"),
                                      "--containerd-config", str(tmp_path / "k3s/config.toml")])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    ours = [r for r in info["runtimes"] if r["name"] == "containerd"]
    assert ours == [{"name": "containerd", "dirs": [str(tmp_path / "bin")], "pid": None,
                     "configs": [str(tmp_path / "k3s/config.toml")], "errors": [],
                     "note": None, "runs": str(tmp_path / "bin/host-local-sqlite")}]
    assert not [w for w in info["warnings"] if w.startswith("containerd")]

    # Under --root, the path is inside the root; a file that is not there is named.
    info, _ = install(tmp_path, "/bin", "--containerd-config", "/k3s/config.toml")
    assert [r["dirs"] for r in info["runtimes"] if r["name"] == "containerd"] == [
        [str(tmp_path / "bin")]]
    info, _ = install(tmp_path, "/bin", "--containerd-config", "/k3s/absent.toml")
    assert "containerd: /k3s/absent.toml (--containerd-config) does not exist: containerd " \
        "runs on its defaults" in info["warnings"]


# -- who owns the file ----------------------------------------------------------------
def test_package_owner_from_dpkg_file_lists(tmp_path):
    assert plugin_dirs.package_owner(str(tmp_path), "/usr/lib/cni/host-local") is None  # no dpkg
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local",
                 "/usr/lib/cni/bridge")
    dpkg_package(tmp_path, "libfoo1:amd64", "/usr/lib/x86_64-linux-gnu/libfoo.so.1")
    owner = plugin_dirs.package_owner
    assert owner(str(tmp_path), "/usr/lib/cni/host-local") == "containernetworking-plugins"
    assert owner(str(tmp_path), "/usr/lib/x86_64-linux-gnu/libfoo.so.1") == "libfoo1"
    assert owner(str(tmp_path), "/usr/lib/cni") == "containernetworking-plugins"
    assert owner(str(tmp_path), "/opt/cni/bin/host-local") is None


@pytest.mark.reference
def test_real_dpkg_agrees_on_debians_go_host_local():
    """Read-only, on this system: our reading of dpkg's lists against dpkg-query."""
    if not os.path.isfile(GO_HOST_LOCAL):
        assert not IN_CI, "CI installs containernetworking-plugins"
        pytest.skip("Debian's containernetworking-plugins is not installed")
    query = subprocess.run(["dpkg-query", "-S", GO_HOST_LOCAL], capture_output=True,
                           text=True, check=True).stdout
    package = [line.split(":")[0] for line in query.splitlines()
               if line.endswith(": " + GO_HOST_LOCAL) and not line.startswith("diversion")]
    assert package == ["containernetworking-plugins"]
    assert plugin_dirs.package_owner("/", GO_HOST_LOCAL) == package[0]
    old = plugin_dirs.foreign("/", GO_HOST_LOCAL)
    assert str(old) == "a Go executable, owned by Debian package containernetworking-plugins"


def test_what_the_file_in_the_way_is(tmp_path):
    def what(path):
        return str(plugin_dirs.foreign(str(tmp_path), path, console_script="/nonexistent"))

    go_binary(tmp_path, "/usr/lib/cni/host-local")
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local")
    put(tmp_path, "/opt/cni/bin/script", "#!/bin/sh\nexec true\n", 0o755)
    put(tmp_path, "/opt/cni/bin/data", "12345")
    (tmp_path / "opt/cni/bin/link").symlink_to("/usr/lib/cni/host-local")
    (tmp_path / "opt/cni/bin/dir").mkdir()
    assert what("/usr/lib/cni/host-local") == (
        kind_of_go_binary() + ", owned by Debian package containernetworking-plugins")
    assert what("/opt/cni/bin/script") == "a script (#!/bin/sh)"
    assert what("/opt/cni/bin/data") == "a file of 5 bytes"
    assert what("/opt/cni/bin/link") == ("a symbolic link to /usr/lib/cni/host-local (owned "
                                         "by Debian package containernetworking-plugins)")
    assert what("/opt/cni/bin/dir") == "a directory"
    assert plugin_dirs.foreign(str(tmp_path), "/opt/cni/bin/absent") is None


# -- install-plugin -------------------------------------------------------------------
def test_refuses_to_replace_a_file_that_is_not_its_launcher(tmp_path, install):
    go = go_binary(tmp_path, "/opt/cni/bin/host-local")
    before = go.read_bytes()
    _, stderr = install(tmp_path, "/opt/cni/bin", "--name", "host-local", expect=1)
    assert stderr == ("Error: /opt/cni/bin/host-local is %s, not one that install-plugin "
                      "wrote: not replacing it. --force replaces it and keeps it as "
                      "/opt/cni/bin/host-local.orig\n" % kind_of_go_binary())
    script = put(tmp_path, "/opt/cni/bin/host-local-sqlite", "#!/bin/sh\n", 0o755)
    _, stderr = install(tmp_path, "/opt/cni/bin", expect=1)
    assert "host-local-sqlite is a script (#!/bin/sh), not one that install-plugin wrote" in stderr

    go_binary(tmp_path, "/usr/lib/cni/host-local")
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local")
    _, stderr = install(tmp_path, "/usr/lib/cni", "--name", "host-local", expect=1)
    assert ", owned by Debian package containernetworking-plugins, not one" in stderr
    assert "keeps it as /usr/lib/cni/host-local.distrib (a dpkg diversion)" in stderr
    assert go.read_bytes() == before and script.read_text() == "#!/bin/sh\n"
    assert sorted(os.listdir(tmp_path / "opt/cni/bin")) == ["host-local", "host-local-sqlite"]


def test_replaces_its_own_launcher_and_the_console_script_link_silently(tmp_path, install):
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    first, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    assert first["path"] == "/opt/cni/bin/host-local" and first["kept"] is None
    again, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    assert again["kept"] is None
    console_script = os.path.join(os.path.dirname(sys.executable), "host-local-sqlite")
    (tmp_path / "opt/cni/bin/host-local-sqlite").symlink_to(console_script)
    info, _ = install(tmp_path)  # the default directory, under the root
    assert info["path"] == "/opt/cni/bin/host-local-sqlite" and info["kept"] is None
    assert sorted(os.listdir(tmp_path / "opt/cni/bin")) == ["host-local", "host-local-sqlite"]
    assert all(is_launcher(p) for p in (tmp_path / "opt/cni/bin").iterdir())


def test_a_launcher_over_a_build_says_so_and_removes_what_the_build_leaves(tmp_path,
                                                                            install):
    """The self-contained build installed at NAME (a stand-in: the copies and links of
    ipam.install.frozen), then this installation's launcher over it: it says what it replaced,
    removes the copy, the tarball's ipamctl link and current, and the emptied
    host-local-sqlite.d/; the replaced installation is named in the text too. Its
    launcher again over itself replaces nothing."""
    from test_frozen import fake_build

    from ipam.install import frozen

    bin_dir = tmp_path / "opt/cni/bin"
    bin_dir.mkdir(parents=True)
    copy = frozen.install(str(bin_dir), "host-local-sqlite",
                          fake_build(tmp_path / "build", "a" * 64))["build"]
    (bin_dir / "ipamctl").symlink_to("host-local-sqlite.d/1.2.3-aaaaaaaaaaaa/ipamctl")
    info, _ = install(tmp_path, "/opt/cni/bin")
    replaced = info["replaced"]
    assert replaced["kind"] == "build"
    assert replaced["what"] == "the self-contained build 1.2.3-aaaaaaaaaaaa"
    assert replaced["removed"] == [copy] and replaced["directory"] is True
    assert replaced["links"] == [str(bin_dir / "ipamctl"),
                                 os.path.join(os.path.dirname(copy), frozen.CURRENT)]
    assert sorted(os.listdir(bin_dir)) == ["host-local-sqlite"]
    assert is_launcher(bin_dir / "host-local-sqlite")
    again, _ = install(tmp_path, "/opt/cni/bin")
    assert again["replaced"] is None

    # In the text: what it replaced, and what it removed.
    frozen.install(str(bin_dir), "host-local-sqlite", str(tmp_path / "build"))
    text, _ = install(tmp_path, "/opt/cni/bin", output="table")
    assert "replaced the self-contained build 1.2.3-aaaaaaaaaaaa" in text
    assert "removed its copies no link uses any more: %s" % copy in text
    assert "removed the emptied host-local-sqlite.d/" in text


def test_the_build_over_a_launcher_names_the_launcher_it_replaces(tmp_path):
    (tmp_path / "bin").mkdir()
    launcher.install(str(tmp_path / "bin"), python=sys.executable, paths=[])
    found = plugin_dirs.ours(str(tmp_path), "/bin/host-local-sqlite")
    assert found == {"kind": "launcher", "what": "the launcher of the Python installation "
                     + sys.executable}
    assert plugin_dirs.ours(str(tmp_path), "/bin/nothing") is None


def test_force_keeps_a_plain_file_as_orig_never_overwriting_one(tmp_path, install):
    go = go_binary(tmp_path, "/opt/cni/bin/host-local")
    before = go.read_bytes()
    older = put(tmp_path, "/opt/cni/bin/host-local.orig", "an older one")
    info, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local", "--force")
    assert info["kept"] == {"path": "/opt/cni/bin/host-local.orig.1", "how": "renamed",
                            "package": None, "was": kind_of_go_binary()}
    assert (tmp_path / "opt/cni/bin/host-local.orig.1").read_bytes() == before
    assert older.read_text() == "an older one" and is_launcher(go)
    assert os.access(tmp_path / "opt/cni/bin/host-local.orig.1", os.X_OK)

    put(tmp_path, "/opt/cni/bin/host-local", "#!/bin/sh\n", 0o755)
    text, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local", "--force",
                      output="table")
    assert text == ("wrote /opt/cni/bin/host-local\nthe Python thin client (--client python)"
                    "\nkept the file it replaced (a script "
                    "(#!/bin/sh)) as /opt/cni/bin/host-local.orig.2\n")


def test_force_diverts_a_package_file_with_dpkg_divert(tmp_path, install):
    """A real dpkg-divert, on the temporary root only (--root): this system's own
    diversions must stay as they were."""
    if shutil.which("dpkg-divert") is None:
        assert not IN_CI, "CI runs on Debian"
        pytest.skip("no dpkg-divert (not a Debian system)")
    system_diversions = subprocess.run(["dpkg-divert", "--list"], capture_output=True,
                                       text=True, check=True).stdout
    program(tmp_path, "podman")
    go = go_binary(tmp_path, "/usr/lib/cni/host-local")
    before = go.read_bytes()
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local")

    text, stderr = install(tmp_path, "/usr/lib/cni", "--name", "host-local", "--force",
                           output="table")
    assert text == (
        "wrote /usr/lib/cni/host-local\nthe Python thin client (--client python)\nkept the "
        "host-local file (%s, owned by Debian "
        "package containernetworking-plugins) as /usr/lib/cni/host-local.distrib: a local "
        "dpkg diversion, so upgrades of containernetworking-plugins install it there, not "
        "over the launcher (undo: rm /usr/lib/cni/host-local; dpkg-divert --rename --remove "
        "/usr/lib/cni/host-local)\n" % kind_of_go_binary())
    assert stderr == ""  # podman now runs the launcher
    assert is_launcher(go) and (tmp_path / "usr/lib/cni/host-local.distrib").read_bytes() == before

    def divert(*args):
        return subprocess.run(["dpkg-divert", "--root", str(tmp_path), *args],
                              capture_output=True, text=True, check=True).stdout

    assert divert("--list") == ("local diversion of /usr/lib/cni/host-local to "
                                "/usr/lib/cni/host-local.distrib\n")
    assert divert("--truename", "/usr/lib/cni/host-local") == "/usr/lib/cni/host-local.distrib\n"
    # Once it is our launcher, installing again replaces it silently; no second diversion.
    info, _ = install(tmp_path, "/usr/lib/cni", "--name", "host-local")
    assert info["kept"] is None and info["warnings"] == []
    assert info["runtimes"][0]["runs"] == "/usr/lib/cni/host-local"
    assert subprocess.run(["dpkg-divert", "--list"], capture_output=True, text=True,
                          check=True).stdout == system_diversions


def test_force_stops_when_the_diversions_name_is_taken(tmp_path, install):
    go = go_binary(tmp_path, "/usr/lib/cni/host-local")
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local")
    put(tmp_path, "/usr/lib/cni/host-local.distrib", "someone's")
    _, stderr = install(tmp_path, "/usr/lib/cni", "--name", "host-local", "--force", expect=1)
    assert stderr.startswith("Error: /usr/lib/cni/host-local.distrib exists already")
    assert not is_launcher(go)


def test_warns_when_podman_would_run_gos_host_local_first(tmp_path, install):
    program(tmp_path, "podman")
    go_binary(tmp_path, "/usr/lib/cni/host-local")
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    info, stderr = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    warning = ("podman searches /usr/lib/cni before /opt/cni/bin: it would run "
               "/usr/lib/cni/host-local, not this launcher")
    assert info["warnings"] == [warning] and stderr == "warning: %s\n" % warning
    assert info["runtimes"] == [{"name": "podman", "dirs": plugin_dirs.PODMAN_DIRS,
                                 "configs": [], "errors": [], "note": None,
                                 "runs": "/usr/lib/cni/host-local", "pid": None}]
    assert is_launcher(tmp_path / "opt/cni/bin/host-local")  # written all the same

    # Under another name nothing is in the way.
    info, stderr = install(tmp_path, "/opt/cni/bin")
    assert info["warnings"] == [] and stderr == ""


def test_warns_when_a_runtime_does_not_search_the_directory(tmp_path, install):
    put(tmp_path, "/etc/crio/crio.conf", "[crio.network]\n")
    program(tmp_path, "nomad")
    put(tmp_path, "/etc/nomad.d/client.hcl", 'cni_path = "/usr/local/lib/cni"\n')
    (tmp_path / "usr/local/lib/cni").mkdir(parents=True)
    info, _ = install(tmp_path, "/usr/local/lib/cni/")
    assert info["path"] == "/usr/local/lib/cni/host-local-sqlite"
    assert info["warnings"] == ["crio does not search /usr/local/lib/cni (it searches "
                                "/opt/cni/bin): it would run no host-local-sqlite at all"]


def test_warns_when_no_runtime_is_found(tmp_path, install):
    (tmp_path / "srv").mkdir()
    info, _ = install(tmp_path, "/srv")
    assert info["runtimes"] == [] and len(info["warnings"]) == 1
    assert info["warnings"][0].startswith("found no container runtime (podman, containerd")


def test_a_missing_directory_is_named_with_the_runtimes_directories(tmp_path, install):
    program(tmp_path, "podman")
    put(tmp_path, "/etc/containerd/config.toml", "version = 2\n")
    orders = ("The plugin directories of the runtimes found here, in their search order: "
              "podman: /usr/local/libexec/cni, /usr/libexec/cni, /usr/local/lib/cni, "
              "/usr/lib/cni, /opt/cni/bin; containerd: /opt/cni/bin")
    _, stderr = install(tmp_path, "/opt/cni/bin", expect=2)  # absent on Debian
    assert stderr.endswith("Error: Invalid value for DIRECTORY: /opt/cni/bin does not "
                           "exist. %s. --create-dir creates it\n" % orders)
    put(tmp_path, "/opt/cni/bin", "a file")
    _, stderr = install(tmp_path, "/opt/cni/bin", expect=2)
    assert "/opt/cni/bin is not a directory. The plugin" in stderr
    assert "--create-dir" not in stderr
    _, stderr = install(tmp_path, "/opt/cni/bin", "--create-dir", expect=2)
    assert "/opt/cni/bin is not a directory. The plugin" in stderr


# -- install-plugin without a directory -----------------------------------------------
def test_without_a_directory_opt_cni_bin_else_usr_lib_cni(tmp_path, install):
    (tmp_path / "usr/lib/cni").mkdir(parents=True)
    info, _ = install(tmp_path)
    why = ("it exists (/opt/cni/bin does not); it is Debian's (containernetworking-plugins); "
           "no container runtime found here runs CNI plugins")
    assert (info["directory"], info["why"], info["created"]) == ("/usr/lib/cni", why, [])
    assert info["path"] == "/usr/lib/cni/host-local-sqlite"
    assert is_launcher(tmp_path / "usr/lib/cni/host-local-sqlite")

    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    text, _ = install(tmp_path, output="table")
    assert text == ("chose /opt/cni/bin: it exists; it is the CNI default; no container "
                    "runtime found here runs CNI plugins\nwrote /opt/cni/bin/host-local-sqlite"
                    "\nthe Python thin client (--client python)\n")
    # A directory named is not chosen: no "why".
    info, _ = install(tmp_path, "/usr/lib/cni")
    assert (info["directory"], info["why"]) == ("/usr/lib/cni", None)


def test_without_a_directory_the_one_the_runtimes_would_run_it_from(tmp_path, install):
    """Debian with podman 4: Go's host-local sits in /usr/lib/cni, which podman searches
    before /opt/cni/bin; so a drop-in goes to /usr/lib/cni (and is refused there,
    naming the package), a plugin of its own name to /opt/cni/bin."""
    program(tmp_path, "podman")
    go_binary(tmp_path, "/usr/lib/cni/host-local")
    dpkg_package(tmp_path, "containernetworking-plugins", "/usr/lib/cni/host-local")
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    _, stderr = install(tmp_path, "--name", "host-local", expect=1)
    assert stderr.startswith("Error: /usr/lib/cni/host-local is %s, owned by Debian package "
                             "containernetworking-plugins, not one that install-plugin "
                             "wrote" % kind_of_go_binary())
    info, _ = install(tmp_path)
    assert (info["directory"], info["why"], info["warnings"]) == (
        "/opt/cni/bin", "it exists; podman would run host-local-sqlite from it", [])

    # What a runtime's config says: CRI-O searching only /usr/libexec/cni wins over an
    # /opt/cni/bin that it does not search (podman searches both).
    put(tmp_path, "/etc/crio/crio.conf", '[crio.network]\nplugin_dirs = ["/usr/libexec/cni"]\n')
    (tmp_path / "usr/libexec/cni").mkdir(parents=True)
    info, _ = install(tmp_path)
    assert (info["directory"], info["why"], info["warnings"]) == (
        "/usr/libexec/cni", "it exists; podman and crio would run host-local-sqlite from it", [])


def test_without_a_directory_nothing_existing_is_an_error_unless_told_to_create(
        tmp_path, install):
    put(tmp_path, "/etc/nomad.d/client.hcl", 'cni_path = "/var/lib/nomad/cni:/opt/cni/bin"\n')
    _, stderr = install(tmp_path, expect=1)
    assert stderr == (
        "Error: /opt/cni/bin does not exist (chosen: none of /opt/cni/bin, /usr/lib/cni, "
        "/var/lib/nomad/cni exists; nomad would run host-local-sqlite from it). The plugin "
        "directories of the runtimes found here, in their search order: nomad: "
        "/var/lib/nomad/cni, /opt/cni/bin. --create-dir creates it\n")
    assert sorted(os.listdir(tmp_path)) == ["etc"]

    umask = os.umask(0o077)  # parents too get 0755: a runtime may run as another user
    try:
        info, _ = install(tmp_path, "--create-dir")
    finally:
        os.umask(umask)
    assert info["created"] == ["/opt", "/opt/cni", "/opt/cni/bin"]
    assert info["path"] == "/opt/cni/bin/host-local-sqlite" and info["warnings"] == []
    assert [stat.S_IMODE((tmp_path / d.lstrip("/")).stat().st_mode)
            for d in info["created"]] == [0o755] * 3
    # Once it exists, --create-dir creates nothing.
    assert install(tmp_path, "--create-dir")[0]["created"] == []


def test_create_dir_makes_a_named_directory(tmp_path, install):
    (tmp_path / "usr").mkdir()
    text, _ = install(tmp_path, "/usr/local/lib/cni", "--create-dir", output="table")
    assert text.startswith("created /usr/local\ncreated /usr/local/lib\ncreated "
                           "/usr/local/lib/cni\nwrote /usr/local/lib/cni/host-local-sqlite"
                           "\nthe Python thin client (--client python)\n")
    assert is_launcher(tmp_path / "usr/local/lib/cni/host-local-sqlite")


def test_install_is_one_library_call_whose_typed_report_the_command_renders(tmp_path,
                                                                            install):
    """The orchestration is the library's (ipam.install.installer.install, a typed report); the
    command parses, calls it, and prints the report's JSON or its rendering."""
    import dataclasses

    from host_local_sqlite_cli.plugin import render
    from ipam.install import installer

    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    report = installer.install(str(tmp_path), "/opt/cni/bin", "host-local", client="python")
    assert isinstance(report, installer.Installed)
    assert (report.path, report.client, report.kept) == (
        "/opt/cni/bin/host-local", "python", None)
    data, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    assert list(data) == [f.name for f in dataclasses.fields(installer.Installed)]
    assert data == report.json()
    text, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local", output="table")
    assert text == render(report) + "\n"
    # A name that is a path is the library's refusal too, as --name's: nothing written.
    for name in ("a/b", "", ".", ".."):
        with pytest.raises(installer.InstallError) as caught:
            installer.install(str(tmp_path), "/opt/cni/bin", name, client="python")
        assert (str(caught.value), caught.value.param) == ("a file name, not a path",
                                                           "--name")
        _, stderr = install(tmp_path, "/opt/cni/bin", "--name", name, expect=2)
        assert "Invalid value for --name: a file name, not a path" in stderr, stderr
    assert sorted(os.listdir(tmp_path / "opt/cni/bin")) == ["host-local"]


def test_help_explains_refusal_and_ends_with_examples():
    result = CliRunner().invoke(cli, ["install-plugin", "--help"])
    assert result.exit_code == 0
    assert "--force" in result.stdout and "--root" in result.stdout
    assert result.stdout.index("Example:") > result.stdout.index("refuses to replace")


# -- the native thin client (ipam.install.native) -------------------------------------------
def native_call(program, command, data_dir, container="c1"):
    """One call of ``program`` as a runtime makes it, no daemon: the native client runs
    the in-process plugin beside it. Returns (status, stdout, stderr)."""
    conf = {"cniVersion": "1.0.0", "name": "nat", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "dataDir": str(data_dir), "daemon": False,
                     "subnet": "10.9.0.0/24"}}
    proc = subprocess.run([str(program)], input=json.dumps(conf).encode(),
                          env={"PATH": os.environ["PATH"], **cni_env(command, container)},
                          capture_output=True, timeout=60)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def cni_env(command, container):
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": "/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}


def test_where_a_native_client_is_it_is_the_default(tmp_path, install, native_program):
    """From a checkout where make native built it: NAME is a copy of the client, the
    launcher beside it runs the call in process only; again, the same, silently; a
    call through NAME with no daemon runs in process; the text says what it wrote."""
    bin_dir = tmp_path / "opt/cni/bin"
    bin_dir.mkdir(parents=True)
    info, _ = install(tmp_path, "/opt/cni/bin", client=None)
    path, in_process = bin_dir / "host-local-sqlite", bin_dir / "host-local-sqlite.in-process"
    assert (info["client"], info["native"], info["in_process"]) == (
        "native", native_program, "/opt/cni/bin/host-local-sqlite.in-process")
    with open(native_program, "rb") as f:
        assert path.read_bytes() == f.read() and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(in_process.stat().st_mode) == 0o755
    assert is_launcher(in_process) and "run(bundled=True, forwarding=False)" in \
        in_process.read_text()
    assert sorted(os.listdir(bin_dir)) == ["host-local-sqlite", "host-local-sqlite.in-process"]
    again, _ = install(tmp_path, "/opt/cni/bin", "--client", "native", client=None)
    assert (again["kept"], again["kept_in_process"], again["replaced"],
            again["stale_in_process"]) == (None, None, None, None)
    status, out, err = native_call(path, "ADD", tmp_path / "data")
    assert (status, err) == (0, ""), out
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"
    text, _ = install(tmp_path, "/opt/cni/bin", output="table", client=None)
    assert text == ("wrote /opt/cni/bin/host-local-sqlite\nthe native thin client, which "
                    "runs /opt/cni/bin/host-local-sqlite.in-process when no node daemon "
                    "takes a call\n")


def test_the_python_client_over_the_native_one_and_back(tmp_path, install, native_program):
    """--client python: the launcher at NAME, and the in-process launcher of ours beside
    it removed (said so); back to native, the pair again, the launcher named as what it
    replaced, nothing said of another kind."""
    bin_dir = tmp_path / "opt/cni/bin"
    bin_dir.mkdir(parents=True)
    install(tmp_path, "/opt/cni/bin", "--name", "host-local", client="native")
    info, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local")
    assert (info["client"], info["native"], info["in_process"]) == (
        "python", native_program, None)
    assert info["stale_in_process"] == {"path": "/opt/cni/bin/host-local.in-process",
                                        "removed": True}
    assert info["replaced"] is None  # a Python installation's either way
    assert sorted(os.listdir(bin_dir)) == ["host-local"] and is_launcher(bin_dir / "host-local")
    status, out, _ = native_call(bin_dir / "host-local", "ADD", tmp_path / "data")
    assert status == 0, out
    info, _ = install(tmp_path, "/opt/cni/bin", "--name", "host-local", client="native")
    assert info["stale_in_process"] is None and info["replaced"] is None
    assert native.is_native(bin_dir / "host-local")
    assert plugin_dirs.ours(str(tmp_path), "/opt/cni/bin/host-local") == {
        "kind": "launcher", "what": "the native thin client and the launcher of the Python "
        "installation " + sys.executable}


def test_a_foreign_file_at_the_in_process_name_is_refused_unless_force(tmp_path, install,
                                                                      native_program):
    """NAME.in-process is the native client's to run: a file there that install-plugin did
    not write is refused, named, untouched; --force keeps it as NAME.in-process.orig. A
    foreign file there is never removed as a stale one of ours."""
    script = put(tmp_path, "/opt/cni/bin/host-local-sqlite.in-process", "#!/bin/sh\n", 0o755)
    _, stderr = install(tmp_path, "/opt/cni/bin", client="native", expect=1)
    assert stderr == ("Error: /opt/cni/bin/host-local-sqlite.in-process is a script "
                      "(#!/bin/sh), not one that install-plugin wrote: not replacing it. "
                      "--force replaces it and keeps it as "
                      "/opt/cni/bin/host-local-sqlite.in-process.orig\n")
    assert os.listdir(tmp_path / "opt/cni/bin") == ["host-local-sqlite.in-process"]
    info, _ = install(tmp_path, "/opt/cni/bin")  # the Python client leaves it alone
    assert info["stale_in_process"] is None and script.read_text() == "#!/bin/sh\n"
    info, _ = install(tmp_path, "/opt/cni/bin", "--force", client="native")
    assert info["kept"] is None
    assert info["kept_in_process"] == {
        "path": "/opt/cni/bin/host-local-sqlite.in-process.orig", "how": "renamed",
        "package": None, "was": "a script (#!/bin/sh)"}
    assert is_launcher(tmp_path / "opt/cni/bin/host-local-sqlite.in-process")


def test_a_stale_in_process_launcher_stays_while_its_client_runs(tmp_path, install,
                                                                 native_program):
    """The native client replaced while a process of it runs (here: waiting for its
    config) keeps the launcher it may yet exec; that call then succeeds, and the next
    install removes it."""
    bin_dir = tmp_path / "opt/cni/bin"
    bin_dir.mkdir(parents=True)
    install(tmp_path, "/opt/cni/bin", client="native")
    conf = {"cniVersion": "1.0.0", "name": "nat", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "dataDir": str(tmp_path / "data"),
                     "daemon": False, "subnet": "10.9.0.0/24"}}
    proc = subprocess.Popen([str(bin_dir / "host-local-sqlite")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": os.environ["PATH"], **cni_env("ADD", "c1")})
    try:
        wait_until(lambda: os.path.samefile("/proc/%d/exe" % proc.pid,
                                            bin_dir / "host-local-sqlite"),
                   "the native client to run")
        info, _ = install(tmp_path, "/opt/cni/bin")
        assert info["stale_in_process"] == {
            "path": "/opt/cni/bin/host-local-sqlite.in-process", "removed": False}
        text, _ = install(tmp_path, "/opt/cni/bin", output="table")
        assert ("kept /opt/cni/bin/host-local-sqlite.in-process: a process still runs the "
                "native client before it (the next install-plugin removes it)") in text
        out, err = proc.communicate(json.dumps(conf).encode(), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"
    info, _ = install(tmp_path, "/opt/cni/bin")
    assert info["stale_in_process"]["removed"] is True
    assert os.listdir(bin_dir) == ["host-local-sqlite"]


def test_where_the_native_client_is_found(tmp_path, native_program):
    """From a checkout, what make native built beside its sources (an older one is
    said to be stale); from a wheel's site-packages, none (no checkout there); each
    saying why none."""
    checkout = tmp_path / "checkout"
    (checkout / "ipam").mkdir(parents=True)
    (checkout / "native").mkdir()
    (checkout / "native" / "client.c").write_text("/* the sources */\n")
    package = str(checkout / "ipam")
    assert native.find(package_dir=package) is None
    assert native.why_none(package_dir=package) == (
        "build/native/host-local-sqlite is not built: 'make native' in %s builds it (a C "
        "compiler)" % checkout)
    built = checkout / "build" / "native" / "host-local-sqlite"
    built.parent.mkdir(parents=True)
    shutil.copy(native_program, built)
    assert native.find(package_dir=package) == str(built)
    os.utime(built, (1, 1))
    assert native.stale(str(built)) == ("%s is older than %s: 'make native' builds it "
                                        "anew" % (built, checkout / "native" / "client.c"))
    built.write_bytes(b"\x7fELF not ours")
    assert native.find(package_dir=package) is None
    site = tmp_path / "site-packages" / "ipam"
    site.mkdir(parents=True)
    assert native.find(package_dir=str(site)) is None
    assert native.why_none(package_dir=str(site)) == (
        "an installation from a wheel has none; the self-contained build has one")
