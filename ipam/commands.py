"""The plugin's commands: load the config, open the store, run the rules, commit, render.

Each command is one store transaction. The mirror is written inside it (under the write
lock) and the result is returned only after COMMIT: the database is the truth.
"""
import sys
import time

from ipam import addr, allocator, config, jsonio, result
from ipam.backend import open_store
from ipam.errors import ConfigError, IoFailure, IpamError, Retry, Unavailable
from ipam.exporter import Mirror
from ipam.ranges import describe

# Set by the console script, which ends the process with os._exit right after the
# answer: closing the database there would only checkpoint and delete the WAL.
KEEP_OPEN = False


def _open(conf):
    store = open_store(conf.database, conf.busy_timeout, node=conf.node,
                       data_dir=conf.data_dir)
    return store, Mirror(conf.data_dir, conf.export)


def _attempts(store, run):
    """``run()`` (one whole transaction), again after a pause each time a shared store
    raises :class:`Retry`; the last attempt's error is the answer. On SQLite, once."""
    for delay in store.retry_delays():
        try:
            return run()
        except Retry:
            time.sleep(delay)
    return run()


def _close(store):
    if not KEEP_OPEN:
        store.close()


def _commit_changes(store, mirror, network, txn_body):
    """Run ``txn_body() -> (value, changes)`` and mirror the changes, in one transaction.

    Returns ``(value, problems)``: the mirror problems that did not stop the command
    (see :meth:`Mirror.apply`); the pending marker then stays for a later repair. If
    anything fails once files were touched, the transaction rolls back and the network's
    files are put back from the database. A command that fails before that still leaves
    the network directory and ``lock``, as host-local's store open does.
    """
    changes = None
    problems = []

    def done():
        if not problems:
            mirror.committed(network)

    try:
        with store.transaction(after_commit=done):
            value, changes = txn_body()
            problems = mirror.apply(store, changes)
    except IpamError:
        if changes:
            _repair_quietly(store, mirror, network)
        else:
            try:
                mirror.touch(network)
            except IpamError:
                pass
        raise
    for p in problems:
        print("host-local-sqlite: %s" % p, file=sys.stderr)
    return value, problems


def cmd_add(env, conf_obj):
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    dns = {}
    if conf.resolv_conf:
        from ipam.dns import parse_resolv_conf

        dns = parse_resolv_conf(conf.resolv_conf)
    store, mirror = _open(conf)
    try:
        def body():
            note_network(store, conf)
            return allocator.add(store, conf.name, conf.range_sets, conf.requested,
                                 env["CNI_CONTAINERID"], env["CNI_IFNAME"])
        allocations, _ = _attempts(
            store, lambda: _commit_changes(store, mirror, conf.name, body))
    finally:
        _close(store)
    return result.render(conf.cni_version, [a.as_tuple() for a in allocations], conf.routes, dns)


def cmd_del(env, conf_obj):
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    store, mirror = _open(conf)
    try:
        def body():
            note_network(store, conf)
            return None, allocator.release(store, conf.name, env["CNI_CONTAINERID"],
                                           env["CNI_IFNAME"], len(conf.range_sets))
        _attempts(store, lambda: _commit_changes(store, mirror, conf.name, body))
    finally:
        _close(store)
    return ""


def cmd_check(env, conf_obj):
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    prev_ips = prev_result_ips(conf_obj.get("prevresult"))
    store, mirror = _open(conf)
    try:
        mirror.touch(conf.name)  # host-local's store open creates them, even for CHECK

        def run():
            with store.transaction():
                note_network(store, conf)
                allocator.check(store, conf.name, env["CNI_CONTAINERID"], env["CNI_IFNAME"],
                                prev_ips)
        _attempts(store, run)
    finally:
        _close(store)
    return ""


def cmd_gc(env, conf_obj):
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    valid = valid_attachments(conf_obj)
    store, mirror = _open(conf)
    try:
        def body():
            note_network(store, conf)  # adopt host-local's files first: GC judges them too
            return None, allocator.gc(store, conf.name, valid)
        _, problems = _attempts(
            store, lambda: _commit_changes(store, mirror, conf.name, body))
    finally:
        _close(store)
    if problems:
        # The leases are released (committed); the runtime hears about the files.
        raise IoFailure("GC released the leases but could not update the mirror: %s"
                        % "; ".join(problems))
    return ""


def cmd_status(env, conf_obj):
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    store, _ = _open(conf)
    try:
        def run():
            with store.transaction():
                note_network(store, conf)  # host-local's files count as taken addresses
                return allocator.exhausted(store, conf.name, conf.range_sets)
        full = _attempts(store, run)
    finally:
        _close(store)
    if full is not None:
        idx, rs = full
        raise Unavailable("no IP addresses available in range set %d: %s" % (idx, rs))
    return ""


def note_network(store, conf):
    """Take the network's lock (a shared store's per-range row locks), then keep the
    ``networks`` row (ranges, dataDir, export) current for ipamctl: one primary-key read
    per command, a write only when the config changed.

    A network we have no record of at all, whose directory holds host-local's files, is
    adopted first (imported inside this same transaction): replacing the Go binary by
    ours then needs no manual step. ``"adopt": false`` turns that off; a shared
    database never adopts.
    """
    store.lock_network(conf.name, len(conf.range_sets))
    old = store.network_info(conf.name)
    # Not into a shared pool: the nodes' host-local pools overlap one another, and
    # "ipamctl import" is the tool that reports those conflicts.
    if old is None and conf.adopt and not store.shared:
        adopt(store, conf)
    info = (conf.data_dir, conf.export,
            jsonio.dumps(describe(conf.range_sets), indent=0))
    # On a shared database every node has its own dataDir: a node's differing from the
    # last writer's is no change worth a write (ipamctl uses its own --data-dir there).
    compared = 1 if store.shared else 0
    if old is None or old[compared:] != info[compared:]:
        store.set_network_info(conf.name, *info)


def adopt(store, conf):
    """Import ``<dataDir>/<network>`` as host-local left it, if the database knows
    nothing of the network."""
    import os

    from ipam import importer
    from ipam.sqlite_store import boot_id

    path = os.path.join(conf.data_dir, conf.name)
    if store.leases(conf.name) or store.cursors(conf.name) \
            or not importer.has_host_local_files(path):
        return
    found = importer.scan(path, conf.name)
    new, _, _, cursors = importer.plan(store, found, conf.range_sets, boot_id())
    importer.apply(store, conf.name, new, cursors)
    for name, reason in found.skipped:
        print("host-local-sqlite: adopting %s: skipped %s: %s" % (conf.name, name, reason),
              file=sys.stderr)


def _repair_quietly(store, mirror, network):
    """After a rollback, put back any file the failed command had already written."""
    try:
        with store.transaction():
            mirror.repair(store, network)
    except IpamError as e:
        print("host-local-sqlite: mirror of %s left for repair: %s" % (network, e.msg),
              file=sys.stderr)


def prev_result_ips(prev):
    """Addresses of a prevResult (0.3.0 and later shape: ``ips[].address``)."""
    if prev is None:
        return None
    if not isinstance(prev, dict):
        raise ConfigError("invalid prevResult: must be an object")
    ips = prev.get("ips")
    if ips is None:
        return []
    if not isinstance(ips, list):
        raise ConfigError("invalid prevResult: ips must be an array")
    out = []
    for i, entry in enumerate(ips):
        text = entry.get("address") if isinstance(entry, dict) else None
        parsed = addr.parse_cidr(text) if isinstance(text, str) else None
        if parsed is None:
            raise ConfigError("invalid prevResult: ips[%d].address is not an address/prefix" % i)
        out.append(parsed[0])
    return out


def valid_attachments(conf_obj):
    """GC's ``cni.dev/valid-attachments`` (or the older ``cni.dev/attachments``)."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in conf_obj:
            items = conf_obj[key]
            break
    else:
        raise ConfigError("GC needs cni.dev/valid-attachments in the config")
    if not isinstance(items, list):
        raise ConfigError("invalid config: %s must be an array" % key)
    valid = set()
    for i, item in enumerate(items):
        cid = item.get("containerid") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise ConfigError("invalid config: %s[%d] needs containerID and ifname strings"
                              % (key, i))
        valid.add((cid, ifname))
    return valid


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc,
            "STATUS": cmd_status}
