"""The plugin's commands: load the config, open the store, run the rules, commit, render.

Each command is one store transaction (preceded by one of its own when the network's
files must be reconciled first). The mirror is written inside it (under the write lock)
and the result is returned only after COMMIT: the database is the truth.
"""
import time

from ipam import addr, allocator, config, jsonio, node_boots, result, system
from ipam.errors import ConfigError, IoFailure, IpamError, NodeConflict, Retry, Unavailable
from ipam.lease import Changes, NetworkRecord
from ipam.mirror.files import Mirror
from ipam.ranges import describe
from ipam.store.backend import busy_timeout, open_store
from ipam.waits import Patience

# Events a call with historyRetention deletes at most: each ADD or DEL writes one, so
# the trim outruns the growth 64 to 1 while its cost stays one short indexed DELETE.
TRIM_BATCH = 64

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional, TextIO, TypeVar

    from ipam.addr import IP
    from ipam.config import IpamConfig
    from ipam.daemon.pool import StorePool
    from ipam.daemon.steps import Steps
    from ipam.mirror.files import NetworkFiles
    from ipam.node_boots import Conflict
    from ipam.ranges import RangeSet
    from ipam.store.protocol import Store

    T = TypeVar("T")
    Env = Mapping[str, str]

class CallContext:
    """How the caller runs its commands, passed in (never set on this module).

    ``keep_open``: a plugin process, which ends with ``os._exit`` right after the
    answer: closing the database there would only checkpoint and delete the WAL.
    ``pool``: the node daemon's stores, kept open across calls (:mod:`ipam.daemon.server`).
    ``before_commit``: run last inside each transaction; the node daemon's check that
    the client still waits for this call (raising rolls the call back). ``idle``: what
    the call's lock waits are wrapped in (:class:`ipam.waits.Patience`): the daemon's,
    which lets another call run meanwhile. ``steps``: where the call marks each step's
    end (:mod:`ipam.daemon.steps`), when the daemon traces them; None otherwise. ``stderr``:
    where the call's diagnostics go (None: the process's stderr); the node daemon
    gives each call its own, which its client prints."""

    __slots__ = ("keep_open", "pool", "before_commit", "idle", "steps", "stderr")

    def __init__(self, keep_open: "bool" = False, pool: "Optional[StorePool]" = None,
                 before_commit: "Optional[Callable[[], None]]" = None,
                 idle: "Optional[Callable[[], ContextManager[object]]]" = None,
                 steps: "Optional[Steps]" = None, stderr: "Optional[TextIO]" = None
                 ) -> "None":
        self.keep_open = keep_open
        self.pool = pool
        self.before_commit = before_commit
        self.idle = idle
        self.steps = steps
        self.stderr = stderr

    def warn(self, text: "str") -> "None":
        """A diagnostic line for whoever made the call (:func:`ipam.system.warn`)."""
        system.warn(text, self.stderr)


_DEFAULT = CallContext()


class _Opened:
    """``with _Opened(conf, context) as opened:`` the store, mirror and lock-wait
    patience of one command.

    Whatever needs no lock is done before each attempt takes the network's lock
    (:meth:`connect`): a shared pool's connect must not hold that lock. In a plugin
    process the store is opened for this call alone, and connected then. In the node
    daemon the pool has one ready then (:meth:`StorePool.ready`), and the call takes it
    only once the network's lock is held (:meth:`take_store`), so that calls waiting for
    one network's lock hold no store (a burst on one network then uses one, where every
    call would open its own); it goes back after a call that succeeded (one that
    failed closes it: whatever state the failure left goes too)."""

    def __init__(self, conf: "IpamConfig", context: "Optional[CallContext]") -> "None":
        self.context = context = context or _DEFAULT
        self.conf = conf
        self._store: "Optional[Store]" = None
        # Two hosts using the node's name, as the last attempt's transaction found them
        self.conflict: "Optional[Conflict]" = None
        if context.pool is None:
            self._store = open_store(conf.database, conf.busy_timeout, node=conf.node,
                                     data_dir=conf.data_dir)
        self.mirror = Mirror(conf.data_dir, conf.export, conf.busy_timeout, context.warn)
        self.patience = Patience(busy_timeout(conf.database, conf.busy_timeout),
                                 conf.lock_wait_limit, context.idle)

    def connect(self) -> "None":
        """Connect this call's own store (a plugin process's), or have one ready in the
        node daemon's pool, before the network's lock is taken."""
        if self._store is not None:
            self._store.connect()
        elif self.context.pool is not None:
            conf = self.conf
            self.context.pool.ready(conf.database, conf.busy_timeout, conf.node,
                                    conf.data_dir, self.patience)

    def take_store(self) -> "Store":
        """The command's store: the one opened, or one from the daemon's pool."""
        if self._store is None:
            pool, conf = self.context.pool, self.conf
            assert pool is not None  # a plugin process opened its store in __init__
            self._store = pool.take(conf.database, conf.busy_timeout, conf.node,
                                    conf.data_dir)
        return self._store

    def __enter__(self) -> "_Opened":
        return self

    def __exit__(self, exc_type: "Optional[type[BaseException]]", exc: "Any",
                 tb: "Any") -> "None":
        store, self._store = self._store, None
        if store is None:
            return
        if self.context.pool is not None:
            self.context.pool.give(store, reuse=exc_type is None)
        elif not self.context.keep_open:
            store.close()


def _attempts(opened: "_Opened", run: "Callable[[], T]") -> "T":
    """``run()`` (one whole transaction), again after a pause each time a shared store
    raises :class:`Retry`; the last attempt's error is the answer. On SQLite, once."""
    delays: "Optional[Iterator[float]]" = None
    while True:
        try:
            return run()
        except Retry:
            if delays is None:
                delays = iter(opened.take_store().retry_delays())
            delay = next(delays, None)
            if delay is None:
                raise
            time.sleep(delay)


def _run(opened: "_Opened", conf: "IpamConfig",
         body: "Callable[[Store, Optional[NetworkFiles]], tuple[T, Changes]]",
         judge: "bool" = False) -> "tuple[T, list[str]]":
    """Run ``body(store, files) -> (value, changes)`` as one transaction, with the
    network's files held (the store connected first, then host-local's ``lock``, then
    the transaction) and reconciled first if someone else changed them.

    First in the transaction, before the network's lock (so that a shared pool's
    other nodes never wait for it), this boot is stamped under the node's name; with
    ``judge``, ``opened.conflict`` says whether another host uses the name too
    (:mod:`ipam.node_boots`), for ``body`` and the caller.

    A reconcile is committed on its own, first, in a transaction of its own (only
    when there is one to do: the common call stays one transaction). It records what
    others did to the files and puts ours back, which stays true whatever the command
    then does: an ADD that fails (a full pool, a requested address taken) must not
    roll it back, or every later call would redo it, and fail alike, while ``ipamctl
    check`` kept reporting it. host-local's lock is held across both transactions.

    Returns ``(value, problems)``: the mirror problems that did not stop the command
    (see :meth:`NetworkFiles.apply`); the journal then stays for a later command. If
    anything fails once files were touched, the transaction rolls back and the files
    this command journaled are put back from the database, still under the lock.
    """
    patience, steps = opened.patience, opened.context.steps
    if steps is not None:
        steps.mark("config")
    opened.connect()  # a Retry from it is the attempt's, as any other
    # created, as host-local's store open does
    held = opened.mirror.hold(conf.name, patience=patience)
    try:
        store = opened.take_store()
    except BaseException:
        if held is not None:
            held.close()
        raise
    files = None if held is None else opened.mirror.files(store, held)
    if steps is not None:
        steps.mark("locks")
        if files is not None:
            files.steps = steps
    try:
        for alone in (True, False):  # the reconcile alone, if any; then the command
            after = _AfterCommit(files, steps)
            with store.transaction(after_commit=after, patience=patience,
                                   before_commit=opened.context.before_commit):
                if steps is not None:
                    steps.mark("begin")
                conflict = node_boots.note(store, system.boot_id(),
                                           judge or (files is not None and store.shared))
                opened.conflict = conflict if judge else None
                if files is not None and conflict is not None:
                    files.strangers = conflict.strangers()
                note_network(store, conf)
                if files is not None:
                    # A shared pool takes no node's old files on first contact: the
                    # nodes' host-local pools overlap ("ipamctl import" reports that).
                    first = store.shared and store.mirror_stamp(conf.name) is None
                    if files.reconcile_if_changed(conf.range_sets,
                                                  conf.adopt and not first) is not None \
                            and alone:
                        files.record()
                        after.reconciled_only = True
                        continue  # COMMIT it
                value, changes = body(store, files)
                if steps is not None:
                    steps.mark("body")
                problems = files.apply(changes) if files is not None else []
                if files is not None:
                    files.record()
                if steps is not None:
                    steps.mark("apply")
            break
        if steps is not None:
            steps.mark("after-commit")
    except IpamError as e:
        # After a failed COMMIT only the next process knows whether it landed: the
        # journal stays for it, untouched.
        if files is not None and files.touched() and not e.outcome_unknown:
            _repair_quietly(store, files)
        raise
    finally:
        if files is not None:
            files.close()
    for p in problems:
        opened.context.warn(p)
    return value, problems


class _AfterCommit:
    """What follows one of :func:`_run`'s COMMITs, still in the writers' queue: the
    files' journal goes; host-local's lock too, unless the transaction committed only
    the reconcile and the command's own is next."""

    __slots__ = ("files", "reconciled_only", "steps")

    def __init__(self, files: "Optional[NetworkFiles]", steps: "Optional[Steps]" = None
                 ) -> "None":
        self.files = files
        self.reconciled_only = False
        self.steps = steps

    def __call__(self) -> "None":
        if self.steps is not None:
            self.steps.mark("commit")
        if self.files is not None:
            if self.reconciled_only:
                self.files.settled()
            else:
                self.files.committed()


def trim_history(store: "Store", conf: "IpamConfig") -> "None":
    """``ipam.historyRetention``: delete a few of the oldest events past it, inside the
    command's transaction. Without the key, not one statement."""
    if conf.history_retention is not None:
        store.prune_history(time.time() - conf.history_retention, TRIM_BATCH)


def cmd_add(env: "Env", conf_obj: "dict[str, Any]",
            context: "Optional[CallContext]" = None) -> "str":
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    pod = config.recorded_pod(conf.pod, (context or _DEFAULT).warn)
    dns: dict[str, Any] = {}
    if conf.resolv_conf:
        from ipam.dns import parse_resolv_conf

        dns = parse_resolv_conf(conf.resolv_conf)
    with _Opened(conf, context) as opened:
        def body(store: "Store", files: "Optional[NetworkFiles]"
                 ) -> "tuple[list[allocator.Allocation], Changes]":
            trim_history(store, conf)
            return allocator.add(store, conf.name, conf.range_sets, conf.requested,
                                 env["CNI_CONTAINERID"], env["CNI_IFNAME"], files=files,
                                 pod=pod)
        allocations, _ = _attempts(opened, lambda: _run(opened, conf, body, judge=True))
        if opened.conflict is not None:  # committed all the same: the pod needs its address
            opened.context.warn(opened.conflict.warning())
    return result.render(conf.cni_version, [a.as_tuple() for a in allocations], conf.routes, dns)


def cmd_del(env: "Env", conf_obj: "dict[str, Any]",
            context: "Optional[CallContext]" = None) -> "str":
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    with _Opened(conf, context) as opened:
        def body(store: "Store", files: "Optional[NetworkFiles]") -> "tuple[None, Changes]":
            trim_history(store, conf)
            return None, allocator.release(store, conf.name, env["CNI_CONTAINERID"],
                                           env["CNI_IFNAME"], len(conf.range_sets))
        _attempts(opened, lambda: _run(opened, conf, body))
    return ""


def cmd_check(env: "Env", conf_obj: "dict[str, Any]",
              context: "Optional[CallContext]" = None) -> "str":
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    prev_ips = prev_result_ips(conf_obj.get("prevresult"))
    with _Opened(conf, context) as opened:
        def body(store: "Store", files: "Optional[NetworkFiles]") -> "tuple[None, Changes]":
            allocator.check(store, conf.name, env["CNI_CONTAINERID"], env["CNI_IFNAME"],
                            prev_ips)
            return None, Changes(conf.name)
        _attempts(opened, lambda: _run(opened, conf, body))
    return ""


def cmd_gc(env: "Env", conf_obj: "dict[str, Any]",
           context: "Optional[CallContext]" = None) -> "str":
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    valid = valid_attachments(conf_obj)
    with _Opened(conf, context) as opened:
        # host-local's files are reconciled first: GC judges them too
        def body(store: "Store", files: "Optional[NetworkFiles]") -> "tuple[None, Changes]":
            if opened.conflict is not None:  # the name's leases are two hosts'
                return None, Changes(conf.name)
            return None, allocator.gc(store, conf.name, valid)
        _, problems = _attempts(opened, lambda: _run(opened, conf, body, judge=True))
    if opened.conflict is not None:  # the stamp is committed: the other host sees this one
        raise NodeConflict("GC refused, nothing released: " + opened.conflict.refusal())
    failed = [p for p in problems if not p.startswith("left ")]
    if failed:
        # The leases are released (committed); the runtime hears about the files.
        raise IoFailure("GC released the leases but could not update the mirror: %s"
                        % "; ".join(failed))
    return ""


def cmd_status(env: "Env", conf_obj: "dict[str, Any]",
               context: "Optional[CallContext]" = None) -> "str":
    conf = config.load(conf_obj, env.get("CNI_ARGS", ""))
    with _Opened(conf, context) as opened:
        # host-local's files count as taken addresses
        def body(store: "Store", files: "Optional[NetworkFiles]"
                 ) -> "tuple[Optional[tuple[int, RangeSet]], Changes]":
            return allocator.exhausted(store, conf.name, conf.range_sets), Changes(conf.name)
        full, _ = _attempts(opened, lambda: _run(opened, conf, body))
    if full is not None:
        idx, rs = full
        raise Unavailable("no IP addresses available in range set %d: %s" % (idx, rs))
    return ""


def note_network(store: "Store", conf: "IpamConfig") -> "None":
    """Take the network's lock (a shared store's per-range row locks), then keep the
    ``networks`` row (ranges, dataDir, export) current for ipamctl: one primary-key read
    per command, a write only when the config changed."""
    store.lock_network(conf.name, len(conf.range_sets))
    record = NetworkRecord(conf.data_dir, conf.export,
                           jsonio.dumps(describe(conf.range_sets), indent=0))
    if not record.same_config(store.network_info(conf.name), store.shared):
        store.set_network_info(conf.name, record)


def _repair_quietly(store: "Store", files: "NetworkFiles") -> "None":
    """After a rollback, undo or redo the files the failed command journaled."""
    from ipam.mirror import reconcile

    files.replay()
    try:
        with store.transaction(after_commit=files.committed):
            reconcile.redo_journal(files)
    except IpamError as e:
        files.warn("mirror of %s left for repair: %s" % (files.network, e.msg))


def prev_result_ips(prev: "object") -> "Optional[list[IP]]":
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


def valid_attachments(conf_obj: "dict[str, Any]") -> "set[tuple[str, str]]":
    """GC's ``cni.dev/valid-attachments`` (or the older ``cni.dev/attachments``)."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in conf_obj:
            items = conf_obj[key]
            break
    else:
        raise ConfigError("GC needs cni.dev/valid-attachments in the config")
    if not isinstance(items, list):
        raise ConfigError("invalid config: %s must be an array" % key)
    valid: set[tuple[str, str]] = set()
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
