"""``ipamctl check-install``: does each runtime here really run this plugin, and does it work?

A written launcher proves little: a runtime may search another directory first, or
another one altogether, or the launcher may not start for want of its interpreter. So
for each runtime found (:mod:`ipam.install.plugin_dirs`, containerd from the config it runs
with) this takes the file it would run for the plugin's name, says whose it is, and runs
it as the runtime would: a real ADD and DEL (CNI_* environment, the config on stdin,
CNI_PATH its directories) on a throwaway network in a temporary dataDir, so nothing an
operator has is touched (the node daemon, if one runs, may serve the calls: that path
is checked too). Off the plugin's hot path.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import tempfile
import time
from typing import Any

from ipam.install import plugin_dirs

NETWORK = "ipamctl-check-install"
SUBNET = "192.0.2.0/29"  # TEST-NET-1 (RFC 5737): never a real network's
TIMEOUT = 30.0  # each call: a first call may create the database


def check(root: str, plugin: str, runtimes: list[plugin_dirs.Runtime],
          console_script: str | None = None) -> list[dict[str, Any]]:
    """One report per runtime that runs CNI plugins here: ``runtime``, ``runs`` (the
    file, None if none), ``what`` (None when it is ours, else what it is), ``add`` (the
    address ADD returned), ``ms`` (ADD and DEL together), ``problem`` (None when ADD and
    DEL succeeded with our plugin)."""
    reports = []
    for r in runtimes:
        if not r.present or r.note is not None:
            continue
        runs = r.runs(plugin)
        report: dict[str, Any] = {"runtime": r.title, "runs": runs, "what": None,
                                  "add": None, "ms": None, "problem": None}
        reports.append(report)
        if runs is None:
            report["problem"] = "no %s in %s" % (plugin, ", ".join(r.dirs))
            continue
        old = plugin_dirs.foreign(r.root, runs, console_script)
        report["what"] = str(old) if old else None
        started = time.monotonic()
        try:
            report["add"] = _add_del(plugin_dirs.at(r.root, runs), plugin, r.dirs)
        except ValueError as e:
            report["problem"] = str(e)
        report["ms"] = round((time.monotonic() - started) * 1000, 1)
        if report["problem"] is None and old:
            report["problem"] = "%s is %s, not host-local-sqlite" % (runs, old)
    return reports


def _add_del(program: str, plugin: str, dirs: list[str]) -> str:
    """ADD then DEL through ``program``; the address ADD returned, else ValueError."""
    with tempfile.TemporaryDirectory(prefix="ipamctl-check-install.") as data_dir:
        os.chmod(data_dir, 0o755)  # a runtime may run the plugin as another user
        conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                "ipam": {"type": plugin, "dataDir": data_dir,
                         "ranges": [[{"subnet": SUBNET}]]}}
        container = "ipamctl-check-" + secrets.token_hex(8)
        out = _call(program, "ADD", conf, container, dirs)
        try:
            address = json.loads(out)["ips"][0]["address"]
            if ipaddress.ip_interface(address) not in ipaddress.ip_network(SUBNET):
                raise ValueError("outside " + SUBNET)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError("ADD printed no address in %s (%s): %.200s"
                             % (SUBNET, e, out)) from None
        _call(program, "DEL", conf, container, dirs)
        return str(address)


def _call(program: str, command: str, conf: dict[str, Any], container: str,
          dirs: list[str]) -> str:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/proc/%d/ns/net" % os.getpid(), "CNI_PATH": ":".join(dirs),
           "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        proc = subprocess.run([program], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ValueError("%s did not answer within %g s" % (command, TIMEOUT)) from None
    except OSError as e:
        raise ValueError("cannot run it: %s" % e) from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise ValueError("%s exited %d: %.300s" % (command, proc.returncode, out or err))
    return out
