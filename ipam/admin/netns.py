"""Which network namespaces of this host hold which addresses: gc's on-the-wire check.

A lease whose container is gone may still have its address on the wire: a killed
``podman run`` leaves its namespace (and the veth in it) behind, and the next container
given that address would share it with the orphan (two MACs answer ARP). So before
releasing, ``ipamctl gc`` asks every namespace of this host.

Every namespace ``/proc`` shows a holder of (:mod:`ipam.admin.nsfind`: every thread's, every
bind mount in every mount namespace, rootless podman's included), deduplicated, our own
left out; each asked from inside, or read from outside where root may not look inside
(:mod:`ipam.admin.nsaddr`). Not seen: other hosts' namespaces, and one held only by an open
descriptor or a socket. What is found but cannot be read makes the check incomplete:
releasing would then be a guess.

The reading runs in a child process (``python -m ipam.admin.netns``): entering a namespace
(``setns``) changes the calling thread, and ipamctl must stay where it is. The parent
bounds it with a timeout; a namespace that vanishes meanwhile is skipped, not an error.
"""
import errno
import json
import os
import subprocess
import sys

from ipam.admin import nsaddr, nsfind, nsmounts

TIMEOUT = 10.0  # seconds for the whole check (docs/performance.md: ~1 s, 2,000 namespaces)


class Incomplete(Exception):
    """The check could not look everywhere: releasing would be a guess."""


def holders(timeout=TIMEOUT):
    """``{address text: namespace}`` over every namespace of this host (our own
    excluded). Raises :class:`Incomplete`, saying what it waited for or could not read,
    when it could not look everywhere: releasing would then be a guess."""
    try:
        proc = subprocess.run([sys.executable, "-I", "-m", "ipam.admin.netns"], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Incomplete("reading the network namespaces did not finish in %g s" % timeout
                         ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
        raise Incomplete("reading the network namespaces failed: %s" % last)
    answer = json.loads(proc.stdout)
    unread = answer["unreadable"]
    if unread:
        raise Incomplete("%d network namespace(s) could not be read (%s%s)%s" % (
            len(unread), ", ".join(unread[:2]), ", ..." if len(unread) > 2 else "",
            "" if os.geteuid() == 0 else ": run as root"))
    return {_canonical(ip): ns if ifname is None else "%s (%s)" % (ns, ifname)
            for ns, ip, ifname in answer["addresses"]}


def _canonical(text):
    from ipam.addr import parse_ip

    ip = parse_ip(text)
    return text if ip is None else str(ip)


# -- the child ------------------------------------------------------------------------
def probe():
    """``{"addresses": [(namespace, address, ifname or None)], "unreadable": [why]}``."""
    found = nsfind.find()
    addresses, unreadable = [], list(found.unreadable)
    try:
        for space in found.ordered():
            try:
                fd = space.open()
            except nsfind.Unreadable as e:
                unreadable.append(str(e))
                continue
            if fd is None:
                continue  # gone meanwhile
            try:
                nsmounts.setns(fd, nsmounts.CLONE_NEWNET)
                addresses += [(space.label, ip, ifname) for ip, ifname in nsaddr.addresses()]
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: no longer a namespace
                    unreadable.append("%s: %s" % (space.label, e.strerror or e))
            finally:
                os.close(fd)
    finally:
        found.close()
    for label, task in found.outside.values():
        try:
            addresses += [(label, ip, ifname) for ip, ifname in nsaddr.proc_addresses(task)]
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
        except OSError as e:
            unreadable.append("%s: %s" % (label, e.strerror or e))
    return {"addresses": addresses, "unreadable": unreadable}


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
