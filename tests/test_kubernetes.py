"""Kubernetes (deploy/kubernetes/): the installer image, built here from the
self-contained build without pulling anything (conftest's ``installer_image``), and its
DaemonSet's two containers run with podman as the manifest says: the initContainer against
a temporary host directory mounted where the manifest mounts the node's CNI bin
directory, then the plugin it installed run from the host; the node daemon with its
socket directory and a dataDir mounted, serving the host's plugin.

The containers' command lines and mount paths are read from daemonset.yaml itself
(helpers.read_manifest), so the test and the manifest stay in step; what a cluster would
add (scheduling, probes' timing, rolling updates) is checked as the manifest's fields,
in a test that needs nothing more than this venv.
"""
import json
import os
import re
import shutil
import stat

import pytest
from helpers import REPO, cni_env, counted, read_manifest, wait_health

from ipam import paths
from ipam.daemon import server as daemon
from ipam.install import frozen

MANIFEST = os.path.join(REPO, "deploy", "kubernetes", "daemonset.yaml")
POD = read_manifest(MANIFEST)["spec"]["template"]["spec"]
INSTALL, SERVE = POD["initContainers"][0], POD["containers"][0]
IMAGE_IPAMCTL = "/opt/host-local-sqlite/ipamctl"  # the Containerfile's ENTRYPOINT


def _missing():
    """Why the containers cannot run here, or "" (CI installs all of it: .ci/run)."""
    if os.geteuid() != 0:
        return "needs root (podman, as root)"
    for program in ("podman", "runc"):
        if shutil.which(program) is None:
            return "needs %s (Debian: apt-get install %s)" % (program, program)
    return ""


MISSING = _missing()


def runs_containers(test):
    """The marks of a test that builds the image and runs it (the manifest's own test
    needs none of it: it runs in ``make check``)."""
    for mark in (pytest.mark.root, pytest.mark.reference,
                 pytest.mark.network,  # make dist installs the freezer from the package index
                 pytest.mark.skipif(bool(MISSING), reason=MISSING or "runnable")):
        test = mark(test)
    return test


def host_path(container, mount_path):
    """The node's path that ``container`` sees at ``mount_path`` (its hostPath volume)."""
    name = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == mount_path)
    return next(v["hostPath"]["path"] for v in POD["volumes"] if v["name"] == name)


def config(data_dir, daemon_socket=False):
    return json.dumps({"cniVersion": "1.0.0", "name": "kube", "type": "bridge",
                       "ipam": {"type": "host-local-sqlite", "dataDir": data_dir,
                                "daemon": daemon_socket,
                                "ranges": [[{"subnet": "10.67.0.0/24"}]]}}).encode()


def install(installer_image, host_dir, *edits, expect=0):
    """The DaemonSet's initContainer, as the manifest gives it (its args, ``edits``
    appended as an operator would add them), ``host_dir`` mounted where it mounts the
    node's CNI bin directory."""
    assert "command" not in INSTALL  # the image's entrypoint, ipamctl, runs the args
    mount = INSTALL["volumeMounts"][0]["mountPath"]
    return installer_image.podman("run", "--rm", "--network", "host",
                                  "--volume", "%s:%s" % (host_dir, mount),
                                  installer_image.tag, *INSTALL["args"], *edits, expect=expect)


def tree(directory):
    """Every entry under ``directory``: a link's target, else its inode and mtime."""
    found = {}
    for folder, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[os.path.relpath(path, directory)] = (
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else (st.st_ino, st.st_mtime_ns))
    return found


def test_the_manifest_mounts_what_the_plugin_names():
    """The initContainer installs into its mount of the node's CNI bin directory (the
    runtimes' default), never with --force unless edited; the daemon sees the dataDir and
    socket directory at the node's own paths, on the host's network, as root, on every
    node, in the host's PID namespace (it reads its callers' powers from /proc), and gets
    longer than its drain to stop; both run one image, of this version."""
    from importlib.metadata import version

    target = INSTALL["args"][1]
    assert INSTALL["args"][0] == "install-plugin" and "--force" not in INSTALL["args"]
    assert host_path(INSTALL, target) == paths.DEFAULT_BIN_DIR
    mounts = [m["mountPath"] for m in SERVE["volumeMounts"]]
    assert paths.DEFAULT_DATA_DIR in mounts
    assert os.path.dirname(paths.DAEMON_SOCKET) in mounts
    assert all(host_path(SERVE, m) == m for m in mounts)
    assert SERVE["args"][0] == "serve" and "command" not in SERVE
    serve = SERVE["args"]
    assert serve[serve.index("--metrics") + 1] == ":%d" % SERVE["ports"][0]["containerPort"]
    assert float(serve[serve.index("--gc-interval") + 1]) > 0
    cri = serve[serve.index("--gc-cri") + 1]
    assert cri.startswith("unix://") and os.path.dirname(cri[len("unix://"):]) in mounts
    for probe in ("livenessProbe", "readinessProbe"):
        assert SERVE[probe]["exec"]["command"][:2] == [IMAGE_IPAMCTL, "health"]
    assert POD["hostNetwork"] is True and POD["securityContext"]["runAsUser"] == 0
    assert POD["hostPID"] is True
    assert SERVE["securityContext"]["capabilities"]["add"] == ["SYS_PTRACE", "SYS_ADMIN"]
    assert POD["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in POD["tolerations"]
    assert POD["terminationGracePeriodSeconds"] > daemon.DEFAULT_DRAIN_TIMEOUT
    assert SERVE["resources"]["requests"]
    assert read_manifest(MANIFEST)["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert INSTALL["image"] == SERVE["image"]
    assert INSTALL["image"].rsplit(":", 1)[1] == version("host-local-sqlite")


def test_the_cni_bin_directory_is_named_in_one_place_with_both_values():
    """The node's CNI bin directory is one hostPath, named nowhere else in the manifest
    but in comments that give upstream's value and Debian's (whose containerd package
    sets bin_dir = "/usr/lib/cni": a plugin in /opt/cni/bin is never run there)."""
    with open(MANIFEST) as f:
        lines = f.read().splitlines()
    code = [line.split("#")[0] for line in lines]
    comments = " ".join(line.split("#", 1)[1] for line in lines if "#" in line)
    assert [c.strip() for c in code if "/opt/cni/bin" in c or "/usr/lib/cni" in c] == [
        "path: " + paths.DEFAULT_BIN_DIR]
    assert "/usr/lib/cni" in comments and "Debian's containerd" in comments
    assert 'bin_dir = "/usr/lib/cni"' in comments


@runs_containers
def test_the_image_holds_glibc_and_the_build_only(installer_image, frozen_build):
    """FROM scratch: the build at /opt/host-local-sqlite (its entrypoint ipamctl), glibc
    in two layers; no shell, no Python interpreter, no other program."""
    podman, tag = installer_image.podman, installer_image.tag
    image = json.loads(podman("image", "inspect", tag).stdout)[0]
    assert image["Config"]["Entrypoint"] == [IMAGE_IPAMCTL]
    labels = image["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == frozen_build.info["version"]
    assert labels["io.host-local-sqlite.build-digest"] == frozen_build.info["digest"]
    assert len(image["RootFS"]["Layers"]) == 2  # glibc, then the build
    root = podman("image", "mount", tag).stdout.strip()
    try:
        files = {os.path.relpath(os.path.join(d, f), root)
                 for d, dirs, fs in os.walk(root) for f in fs + dirs}
        programs = {f for f in files if os.path.isfile(os.path.join(root, f))
                    and os.stat(os.path.join(root, f)).st_mode & 0o111
                    and ".so" not in os.path.basename(f)}
        with open(os.path.join(root, "opt", "host-local-sqlite", frozen.INFO)) as f:
            assert json.load(f) == frozen_build.info
    finally:
        podman("image", "unmount", tag)
    assert programs == {"opt/host-local-sqlite/ipamctl",
                        "opt/host-local-sqlite/" + frozen.PLUGIN} | (
        {"opt/host-local-sqlite/" + name for name in (frozen.CLIENT, frozen.CLIENT_IN_PROCESS)}
        if frozen_build.info["client"] else set())  # the native client, the link it runs
    assert not [f for f in files if re.match(r"python[\d.]*$|(ba)?sh$|busybox$",
                                             os.path.basename(f))]
    assert {f.split("/")[0] for f in files} == {"etc", "lib", "lib64", "opt", "tmp"}
    assert {"lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2"} <= files
    print("image: %.1f MB" % (image["Size"] / 1e6))


@runs_containers
def test_the_installer_container_installs_the_build(installer_image, frozen_build,
                                                    tmp_path):
    """The initContainer leaves on the host a relative link into the host directory's
    copy of the build (to its native client, where the build has one); the plugin runs
    through it and the copy's ipamctl sees its lease; a second run (the pod restarted)
    changes nothing."""
    host_dir = tmp_path / "cni-bin"
    host_dir.mkdir()  # the manifest's hostPath type Directory: it must exist
    install(installer_image, host_dir)
    link = os.readlink(host_dir / "host-local-sqlite")
    info = frozen_build.info
    assert link == os.path.join(frozen.BUILDS, "%s-%s" % (info["version"], info["digest"][:12]),
                                frozen.CLIENT if info["client"] else frozen.PLUGIN)
    data = str(tmp_path / "data")
    plugin = str(host_dir / "host-local-sqlite")
    address = frozen_build.cni(plugin, "ADD", config(data))["ips"][0]["address"]
    (ipamctl,) = (host_dir / frozen.BUILDS).glob("*-*/ipamctl")  # the one copy
    current = host_dir / frozen.BUILDS / frozen.CURRENT / "ipamctl"  # the stable path
    assert os.path.realpath(current) == os.path.realpath(ipamctl)
    listed = frozen_build.run(str(ipamctl), "--data-dir", data, "-o", "json", "list")
    assert listed.returncode == 0, listed.stderr
    assert [lease["ip"] for lease in json.loads(listed.stdout)] == [address.split("/")[0]]

    before = tree(host_dir)
    again = install(installer_image, host_dir)
    assert "already there" in again.stdout
    assert tree(host_dir) == before
    frozen_build.cni(plugin, "DEL", config(data))
    listed = frozen_build.run(str(ipamctl), "--data-dir", data, "-o", "json", "list")
    assert json.loads(listed.stdout) == []


@runs_containers
def test_the_installer_container_keeps_a_foreign_file(installer_image, tmp_path):
    """A file the installer did not put there stays, and the pod fails to start (the
    initContainer exits non-zero, saying why) until the operator adds --force, which
    keeps it beside."""
    host_dir = tmp_path / "cni-bin"
    host_dir.mkdir()
    foreign = host_dir / "host-local-sqlite"
    foreign.write_text("#!/bin/sh\necho another plugin\n")
    foreign.chmod(0o755)
    refused = install(installer_image, host_dir, expect=None)
    assert refused.returncode != 0
    assert "not replacing it" in refused.stderr and "Traceback" not in refused.stderr
    assert foreign.read_text() == "#!/bin/sh\necho another plugin\n"
    assert not foreign.is_symlink() and stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert not (host_dir / frozen.BUILDS).exists()

    install(installer_image, host_dir, "--force")
    assert frozen.is_ours(os.readlink(foreign))
    assert (host_dir / "host-local-sqlite.orig").read_text() == \
        "#!/bin/sh\necho another plugin\n"


def serve_container(podman, tag, sockets, *volumes, name="serve"):
    """The serve container ``name`` as the manifest runs it (host network and PID
    namespace, its capabilities, its args), with the socket directory at ``sockets`` and
    ``volumes`` (host paths, each mounted at the same path, as the manifest's hostPaths
    are): its socket's path."""
    socket_dir = os.path.dirname(paths.DAEMON_SOCKET)  # the manifest's mount, checked above
    assert POD["hostNetwork"] and POD["hostPID"]
    added = SERVE["securityContext"]["capabilities"]["add"]
    podman("run", "--detach", "--name", name, "--network", "host", "--pid", "host",
           *["--cap-add=%s" % cap for cap in added],
           "--volume", "%s:%s" % (sockets, socket_dir),
           *[arg for v in volumes for arg in ("--volume", "%s:%s" % (v, v))],
           tag, *SERVE["args"])
    socket = str(sockets / os.path.basename(paths.DAEMON_SOCKET))

    def exited():
        state = podman.inspect(name)["State"]
        return None if state["Running"] else "exited (%d)" % state["ExitCode"]
    health = wait_health(socket, exited, lambda: podman("logs", name).stderr, timeout=30)
    assert health["calls"] == 0
    return socket


@runs_containers
def test_the_daemon_container_serves_the_host_plugin(installer_image, frozen_build,
                                                     tmp_path):
    """The serve container, run as the manifest says (its args, its probes' command)
    with a socket directory and a dataDir mounted, serves the plugin run on the host;
    stopped as the kubelet stops it, it drains and exits 0."""
    podman = installer_image.podman
    sockets, data = tmp_path / "run", tmp_path / "data"
    sockets.mkdir()
    data.mkdir()
    socket = serve_container(podman, installer_image.tag, sockets, data)
    probe = podman("exec", "serve", *SERVE["livenessProbe"]["exec"]["command"])
    assert "status: ok" in probe.stdout

    conf = config(str(data), daemon_socket=socket)
    address = frozen_build.cni(frozen_build.plugin, "ADD", conf)["ips"][0]["address"]
    assert counted(socket, 1)["calls"] == 1
    listed = frozen_build.run(frozen_build.ipamctl, "--data-dir", str(data), "-o", "json",
                              "list")
    assert [lease["ip"] for lease in json.loads(listed.stdout)] == [address.split("/")[0]]
    # ipamctl by its name in the pod (kubectl exec POD -- ipamctl list), and gc's check of
    # the node's namespaces from there: the lease is a candidate, not kept for a check
    # that could not run.
    inside = podman("exec", "serve", "ipamctl", "--data-dir", str(data), "-o", "json", "list")
    assert [lease["ip"] for lease in json.loads(inside.stdout)] == [address.split("/")[0]]
    dry = podman("exec", "serve", "ipamctl", "--data-dir", str(data), "-o", "json", "gc",
                 "--valid", "other", "--grace", "0")
    assert [c["container_id"] for c in json.loads(dry.stdout)["candidates"]] == ["c1"], \
        dry.stdout
    metrics = _scrape(SERVE["ports"][0]["containerPort"])
    assert 'host_local_sqlite_calls_total{command="ADD",result="ok"} 1.0' in metrics
    frozen_build.cni(frozen_build.plugin, "DEL", conf)
    assert counted(socket, 2)["calls"] == 2

    podman("stop", "--time", str(POD["terminationGracePeriodSeconds"]), "serve")
    assert podman.inspect("serve")["State"]["ExitCode"] == 0
    log = podman("logs", "serve").stderr
    assert "ADD network=kube container=c1" in log and "stopped after 2 calls" in log, log


def _scrape(port):
    """The serve container's /metrics, on the host's network as the manifest has it."""
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as answer:
        return answer.read().decode()


@runs_containers
def test_a_data_dir_the_daemons_pod_does_not_mount_is_left_to_the_plugin(
        installer_image, frozen_build, tmp_path):
    """A host's config names a dataDir for which the DaemonSet has no hostPath: the
    daemon sees its own image's files there, not the host's, and declines; pod-a's call
    runs in process on the host. With the daemon gone, pod-b's call (in process) finds
    pod-a's lease: two addresses, where a daemon that served pod-a would have kept its
    lease in the pod's own filesystem and given pod-b the same one."""
    podman = installer_image.podman
    sockets, mounted, unmounted = tmp_path / "run", tmp_path / "data", tmp_path / "other"
    for d in (sockets, mounted, unmounted):
        d.mkdir()
    socket = serve_container(podman, installer_image.tag, sockets, mounted, name="serve-b")
    conf = config(str(unmounted), daemon_socket=socket)
    proc = frozen_build.run(frozen_build.plugin, input=conf,
                            env=cni_env("ADD", container_id="pod-a"))
    err = proc.stderr.decode()
    assert proc.returncode == 0, (proc.stdout, err)
    assert "the caller sees other files than the node daemon at %s" % unmounted in err, err
    first = json.loads(proc.stdout)["ips"][0]["address"]
    health = counted(socket, 0)
    assert (health["calls"], health["declined"]) == (0, 1)
    podman("kill", "serve-b")
    second = frozen_build.cni(frozen_build.plugin, "ADD", conf, container="pod-b")
    assert second["ips"][0]["address"] != first
    listed = frozen_build.run(frozen_build.ipamctl, "--data-dir", str(unmounted), "-o",
                              "json", "list")
    assert sorted(lease["container_id"] for lease in json.loads(listed.stdout)) == [
        "pod-a", "pod-b"]
