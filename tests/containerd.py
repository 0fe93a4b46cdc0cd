"""A private containerd (Debian's 1.6), driven over CRI as kubelet drives it.

:class:`Containerd` starts ``containerd --config`` with its own root, state, sockets and
CNI conf and bin directories under a new temporary directory (never the host's
/etc/containerd, never a running system containerd's socket), imports a pause image it
builds from busybox-static (:func:`pause_image`: nothing can be pulled), and talks to it
with our own CRI client (:mod:`ipam.cri`). :meth:`Containerd.close` removes every
sandbox it made, stops containerd and its shims (by their pids), and removes what
containerd 1.6 leaves outside its directories: ``/run/containerd/runc/k8s.io/<id>``,
``/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>``, libcni's cached results
and the cgroups under the test's own cgroup parent. /work/shared/cri-facts.md has the
facts about this machine kind that the settings below follow.
"""
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid

from helpers import BUSYBOX, GO_PLUGINS, PLUGIN

RUNC_STATE = "/run/containerd/runc/k8s.io"
TASKS = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
LIBCNI_CACHE = "/var/lib/cni/results"
CGROUP_ROOT = "/sys/fs/cgroup"
PAUSE = "localhost/hls-pause:test"
START_TIMEOUT = 60.0


def missing():
    """Why containerd's CRI cannot run here, or "" (.ci/run installs all of it)."""
    if os.geteuid() != 0:
        return "needs root (containerd, runc, network namespaces)"
    for program in ("containerd", "ctr", "runc", "ip"):
        if shutil.which(program) is None:
            return "needs %s (Debian: apt-get install %s)" % (
                program, {"ctr": "containerd", "ip": "iproute2"}.get(program, program))
    if not os.access(BUSYBOX, os.X_OK):
        return "needs %s (Debian: apt-get install busybox-static)" % BUSYBOX
    if not os.access(os.path.join(GO_PLUGINS, "bridge"), os.X_OK):
        return "needs Debian's containernetworking-plugins (%s/bridge)" % GO_PLUGINS
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "needs grpcio (pip install -e '.[test]')"
    return ""


def has_cap_sys_resource():
    """Bit 24 of CapEff: without it runc cannot raise a sandbox's oom_score_adj."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def _tar_member(tar, name, data=None, link=None, mode=0o755):
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, mode
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def pause_image(path, name=PAUSE):
    """An OCI image archive at ``path``: one layer holding busybox-static (``/bin/busybox``,
    ``sh`` and ``sleep`` links), entrypoint ``sleep`` (a pause container does nothing),
    named ``name`` by the index's ``io.containerd.image.name`` annotation."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for d in ("bin", "dev", "proc", "sys", "etc", "tmp"):
            _tar_member(tar, d)
        with open(BUSYBOX, "rb") as f:
            _tar_member(tar, "bin/busybox", f.read())
        for applet in ("sh", "sleep"):
            _tar_member(tar, "bin/" + applet, link="busybox")
    layer = layer.getvalue()
    blobs = {}

    def blob(data, media):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = blob(json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep"], "Cmd": ["2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}},
        sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({"schemaVersion": 2,
                                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "config": config, "layers": [layer_desc]}).encode(),
                    "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": name,
                               "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
    with tarfile.open(path, "w") as tar:
        _tar_member(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', mode=0o644)
        _tar_member(tar, "index.json", json.dumps(
            {"schemaVersion": 2, "manifests": [manifest]}).encode(), mode=0o644)
        _tar_member(tar, "blobs")
        _tar_member(tar, "blobs/sha256")
        for digest, data in blobs.items():
            _tar_member(tar, "blobs/sha256/" + digest.split(":")[1], data, mode=0o644)
    return name


def config_toml(d, conf_dir, bin_dir, restrict_oom):
    """containerd's config: everything under ``d``; snapshotters and tracing that need
    host setup disabled; the CRI plugin on our pause image, runc without systemd cgroups,
    CNI from ``conf_dir``/``bin_dir``."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        'root = "%s/root"' % d, 'state = "%s/state"' % d,
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
        '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
        '"io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", '
        '"io.containerd.internal.v1.tracing"]',
        "[grpc]", 'address = "%s/containerd.sock"' % d,
        "[ttrpc]", 'address = "%s/containerd.sock.ttrpc"' % d,
        "[debug]", 'level = "info"',
        "[%s]" % cri, 'sandbox_image = "%s"' % PAUSE,
        'stream_server_address = "127.0.0.1"', 'stream_server_port = "0"',
        "restrict_oom_score_adj = %s" % ("true" if restrict_oom else "false"),
        "[%s.containerd]" % cri, 'snapshotter = "overlayfs"', 'default_runtime_name = "runc"',
        "[%s.containerd.runtimes.runc]" % cri, 'runtime_type = "io.containerd.runc.v2"',
        "[%s.containerd.runtimes.runc.options]" % cri, "SystemdCgroup = false",
        "[%s.cni]" % cri, 'bin_dir = "%s"' % bin_dir, 'conf_dir = "%s"' % conf_dir,
        "max_conf_num = 1", ""])


class Containerd:
    """A private containerd; see the module's docstring. ``network(...)`` writes the
    CNI config, :meth:`start` runs it, :meth:`run_pod` makes a sandbox as kubelet does."""

    def __init__(self, plugin=PLUGIN):
        self.directory = tempfile.mkdtemp(prefix="hls-ctrd-", dir="/tmp")
        self.socket = os.path.join(self.directory, "containerd.sock")
        self.endpoint = "unix://" + self.socket
        self.conf_dir = os.path.join(self.directory, "net.d")
        self.bin_dir = os.path.join(self.directory, "cni-bin")
        self.log_path = os.path.join(self.directory, "containerd.log")
        self.tag = uuid.uuid4().hex[:8]
        self.cgroup_parent = "/hls-%s-kubepods/besteffort" % self.tag
        self.bridge = "hlsc" + self.tag  # 12 characters, within IFNAMSIZ
        self.proc = None
        self.made = set()    # sandbox IDs this instance made
        self.networks = []
        os.makedirs(self.conf_dir)
        os.makedirs(self.bin_dir)
        for name in ("bridge", "loopback", "host-local"):
            os.symlink(os.path.join(GO_PLUGINS, name), os.path.join(self.bin_dir, name))
        self.install_plugin(plugin)
        self.config = os.path.join(self.directory, "config.toml")
        with open(self.config, "w") as f:
            f.write(config_toml(self.directory, self.conf_dir, self.bin_dir,
                                restrict_oom=not has_cap_sys_resource()))

    def install_plugin(self, program, name="host-local-sqlite"):
        """Our plugin in containerd's bin_dir, as ``name``: ``program`` linked there."""
        link = os.path.join(self.bin_dir, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(program, link)

    def network(self, name, subnet, ipam_type="host-local-sqlite", data_dir=None, **ipam):
        """The conflist containerd loads (the only one in its conf dir): Go's bridge on
        this instance's bridge (no gateway, no masquerade: nothing of the host changes)
        and ``ipam_type`` on ``subnet``. Written before :meth:`start`, or in place (the
        conf dir watcher reloads a file written in place)."""
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
             "ipam": dict({"type": ipam_type, "ranges": [[{"subnet": subnet}]]},
                          **({"dataDir": str(data_dir)} if data_dir else {}), **ipam)}]}
        for old in os.listdir(self.conf_dir):
            os.unlink(os.path.join(self.conf_dir, old))
        with open(os.path.join(self.conf_dir, "10-%s.conflist" % name), "w") as f:
            json.dump(conf, f)
        self.networks.append(name)

    def start(self, timeout=START_TIMEOUT):
        """Run containerd until its CRI answers (Version); import the pause image the
        first time."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("containerd exited %d:\n%s" % (self.proc.returncode,
                                                                    self.log()[-4000:]))
            if os.path.exists(self.socket):
                try:
                    with self.runtime(timeout=2.0) as rt:
                        rt.version()
                        conditions = {c.type: c.status for c in rt.call(
                            "Status", _api().StatusRequest()).status.conditions}
                    if conditions.get("RuntimeReady") and conditions.get("NetworkReady"):
                        break
                    last = conditions
                except Exception as e:  # not serving CRI yet
                    last = e
            if time.monotonic() > deadline:
                raise AssertionError("containerd's CRI not ready within %g s (%s):\n%s"
                                     % (timeout, last, self.log()[-4000:]))
            time.sleep(0.05)
        if not getattr(self, "_imported", False):
            archive = os.path.join(self.directory, "pause.tar")
            pause_image(archive)
            proc = subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io", "images",
                                   "import", "--snapshotter", "overlayfs", archive],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            self._imported = True

    def runtime(self, timeout=60.0):
        return Cri(self.endpoint, timeout)

    def pod_config(self, name, namespace="default", uid=None, attempt=0):
        """A PodSandboxConfig as kubelet sends one for a pod on the pod network: its
        metadata, hostname, log directory, kubelet's labels and annotations, and the
        Linux security context (pod network, IPC, container PID namespaces; seccomp
        unconfined, kubelet's default) under this instance's cgroup parent."""
        api = _api()
        uid = uid or str(uuid.uuid4())
        ns = api.NamespaceOption(network=api.POD, pid=api.CONTAINER, ipc=api.POD)
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=namespace,
                                            attempt=attempt),
            hostname=name,
            log_directory=os.path.join(self.directory, "pods", "%s_%s_%s" % (namespace,
                                                                             name, uid)),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                    "io.kubernetes.pod.uid": uid},
            annotations={"kubernetes.io/config.source": "api",
                         "kubernetes.io/config.seen": "2026-01-01T00:00:00Z"},
            linux=api.LinuxPodSandboxConfig(
                cgroup_parent="%s/pod%s" % (self.cgroup_parent, uid),
                security_context=api.LinuxSandboxSecurityContext(
                    namespace_options=ns,
                    seccomp=api.SecurityProfile(
                        profile_type=api.SecurityProfile.Unconfined))))

    def run_pod(self, name, namespace="default", rt=None, **kw):
        """RunPodSandbox: the new sandbox's ID."""
        api = _api()
        config = self.pod_config(name, namespace, **kw)
        with _maybe(rt, self.runtime) as r:
            sid = r.call("RunPodSandbox", api.RunPodSandboxRequest(config=config)).pod_sandbox_id
        self.made.add(sid)
        return sid

    def status(self, sid, verbose=False):
        with self.runtime() as rt:
            return rt.call("PodSandboxStatus", _api().PodSandboxStatusRequest(
                pod_sandbox_id=sid, verbose=verbose))

    def stop_pod(self, sid, rt=None):
        with _maybe(rt, self.runtime) as r:
            r.call("StopPodSandbox", _api().StopPodSandboxRequest(pod_sandbox_id=sid))

    def remove_pod(self, sid, rt=None):
        with _maybe(rt, self.runtime) as r:
            r.call("RemovePodSandbox", _api().RemovePodSandboxRequest(pod_sandbox_id=sid))
        self.made.discard(sid)

    def sandboxes(self):
        with self.runtime() as rt:
            return rt.sandboxes()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self):
        """SIGKILL containerd (its shims and sandboxes live on)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def restart(self):
        self.kill()
        self.start()

    def shims(self):
        """The pids of this containerd's shims (their ``-address`` is its socket)."""
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                    self.socket.encode() in argv:
                out.append(int(pid))
        return out

    def close(self):
        """Remove every sandbox (each one's DEL served while the network is there), stop
        containerd and its shims, then remove what they left; finally the bridge and the
        directory. Fails, after cleaning all it can, if containerd refused a removal."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                with self.runtime() as rt:
                    for s in rt.sandboxes():
                        try:
                            rt.call("StopPodSandbox", _api().StopPodSandboxRequest(
                                pod_sandbox_id=s.id))
                            rt.call("RemovePodSandbox", _api().RemovePodSandboxRequest(
                                pod_sandbox_id=s.id))
                        except Exception as e:
                            problems.append("sandbox %s: %s" % (s.id, e))
            except Exception as e:
                problems.append(str(e))
        self.kill()
        for pid in self.shims():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ids = set(self.made)
        for top in (RUNC_STATE, TASKS):
            for sid in ids:
                path = os.path.join(top, sid)
                if os.path.isdir(path):
                    subprocess.run(["umount", "-R", os.path.join(path, "rootfs")],
                                   capture_output=True, timeout=30)
                    shutil.rmtree(path, ignore_errors=True)
        if os.path.isdir(LIBCNI_CACHE):
            for name in os.listdir(LIBCNI_CACHE):
                if any(name.startswith("%s-%s-" % (n, sid)) for n in self.networks
                       for sid in ids):
                    os.unlink(os.path.join(LIBCNI_CACHE, name))
        top = self.cgroup_parent.strip("/").split("/")[0]
        _remove_cgroups(os.path.join(CGROUP_ROOT, top))
        for point in reversed(_mounts_under(self.directory)):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
        if os.path.exists("/sys/class/net/" + self.bridge):
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)
        assert not problems, problems


def _remove_cgroups(path):
    """rmdir a cgroup tree, leaves first (a cgroup with processes stays, and says so)."""
    if not os.path.isdir(path):
        return
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _mounts_under(directory):
    top = os.path.realpath(directory)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p == top or p.startswith(top + "/")]


def _api():
    from cri_api import api_pb2

    return api_pb2


class Cri:
    """Our CRI client (:mod:`ipam.cri.client`, each call one gRPC call over h2) carrying
    the generated messages of tests/cri_api/: ``call("RunPodSandbox", request)`` is the
    decoded response, as a generated stub's would be."""

    def __init__(self, endpoint, timeout):
        from ipam.cri.client import Runtime

        self.runtime = Runtime(endpoint, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def close(self):
        pass

    def call(self, method, request):
        answer = self.runtime.call(method, request.SerializeToString())
        return getattr(_api(), method + "Response").FromString(answer)

    def version(self):
        return self.call("Version", _api().VersionRequest(version="v1"))

    def sandboxes(self):
        return list(self.call("ListPodSandbox", _api().ListPodSandboxRequest()).items)


class _maybe:
    """``with _maybe(rt, make)``: ``rt`` as is, or a new runtime from ``make()`` closed
    at the end."""

    def __init__(self, rt, make):
        self.rt, self.make, self.owned = rt, make, None

    def __enter__(self):
        if self.rt is not None:
            return self.rt
        self.owned = self.make()
        return self.owned

    def __exit__(self, *exc):
        if self.owned is not None:
            self.owned.close()
