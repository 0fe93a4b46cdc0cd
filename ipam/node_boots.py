"""Two hosts never share a node name silently.

A node's name (``ipam.node``, else ``uname -n``) decides which leases its mirror, its CNI
GC and ``ipamctl gc`` treat as its own on a shared pool. Two hosts given one name (cloned
VMs share the host name, ``/etc/machine-id`` and every key on the cloned disk) would each
collect the other's live leases as leftovers. The kernel's boot id tells them apart, so
every plugin call records its (name, boot id) in the ``node_boots`` table, inside the
command's transaction, and reads the name's other boots:

- **Order, not clocks.** Each stamp takes a number one more than any its name has: a
  boot's record spans its first to its last stamp, and two boots whose spans overlap
  were active at once. A reboot's new boot stamps first after the old boot's last
  stamp, so it never looks like a second host, however fast the reboot and whatever
  the new boot's clock says before it is set.
- **Cheap.** One SELECT per call (the name's few rows and the database's clock), and
  one UPSERT when this boot's record is :data:`STAMP_EVERY` old or another boot of the
  name began after its last stamp (so that the other host sees this one at its next
  call). A name has one row per boot; a new boot drops those idle for :data:`KEEP` that
  hold no lease.
- **Live.** A boot counts while it was active within :data:`ACTIVE_WINDOW`, or while
  leases it made under the name remain: a clone that stopped calling may still run the
  pods whose leases a GC here would take.

Two live boots of one name whose spans overlap (the calling boot's reaches now) are a
conflict. While it stands, ADD goes on with a warning and every GC for the name is
refused (CNI GC here, ``ipamctl gc`` in :mod:`ipam.admin.gc`); ``ipamctl node list`` shows it
and ``ipamctl node claim`` lets the host that keeps the name drop the other's records.

What it cannot see: a host that makes no call at all after the other started (its
first call, or any, reveals it), and a host with no boot id (no ``/proc``).
"""
from ipam import system
from ipam.lease import Boot

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional

    from ipam.store.protocol import Store

# Seconds between two stamps of one boot: the hot path's write, once a minute at most.
STAMP_EVERY = 60.0
# Seconds since its last stamp that a boot counts as active without holding a lease: a
# clone that went quiet is still taken for one this long (ten stamps' worth; gc's
# default --grace is the same ten minutes). A reboot does not wait for it: see above.
ACTIVE_WINDOW = 600.0
# Seconds after which a boot's record goes, at the name's next new boot, unless it
# still holds leases.
KEEP = 7 * 86400.0
_NOW = float("inf")  # the span's end of the boot that is running this code


def note(store: "Store", boot_id: "Optional[str]", judge: "bool" = True
         ) -> "Optional[Conflict]":
    """Stamp this call's boot under the store's node name (inside the command's
    transaction); with ``judge``, the conflict that stands for the name, if any."""
    node = store.node
    if node is None or boot_id is None:
        return None  # nothing to tell hosts apart by
    now, boots = store.boots(node)
    mine = None
    top = 0
    for b in boots:
        if b.last_seq > top:
            top = b.last_seq
        if b.boot_id == boot_id:
            mine = b
    if mine is None or now - mine.seen_at >= STAMP_EVERY or any(
            b.first_seq > mine.last_seq for b in boots):
        seq = top + 1
        stamp = Boot(node, boot_id, system.uname().nodename,
                     seq if mine is None else mine.first_seq, seq,
                     now if mine is None else mine.first_seen, now)
        # once per boot, and only when the name has records that old
        old = mine is None and any(now - b.seen_at > KEEP for b in boots)
        store.stamp_boot(stamp, now - KEEP if old else None)
        boots = [b for b in boots if b is not mine] + [stamp]
    return standing(store, node, boots, boot_id, now) if judge else None


def standing(store: "Store", node: "str", boots: "list[Boot]", me: "Optional[str]",
             now: "float") -> "Optional[Conflict]":
    """The conflict among ``boots`` (one name's), seen by boot ``me`` (active now, if
    among them; None: an onlooker), or None."""
    held: "dict[str, bool]" = {}

    def live(b: "Boot") -> "bool":
        if b.boot_id == me or now - b.seen_at < ACTIVE_WINDOW:
            return True
        if b.boot_id not in held:
            held[b.boot_id] = bool(store.boot_leases(node, b.boot_id))
        return held[b.boot_id]

    involved: "list[Boot]" = []
    for i, a in enumerate(boots):
        for b in boots[i + 1:]:
            if overlap(a, b, me) and live(a) and live(b):
                involved += [x for x in (a, b) if x not in involved]
    return Conflict(node, involved, me, now) if involved else None


def conflicts(store: "Store", node: "Optional[str]", me: "Optional[str]"
              ) -> "list[Conflict]":
    """Every conflict standing for ``node`` (None: for each name recorded), seen by
    boot ``me`` (this host's; it counts as active now where it is one of a name's)."""
    now, boots = store.boots(node)
    names: "dict[str, list[Boot]]" = {}
    for b in boots:
        names.setdefault(b.node, []).append(b)
    found = [standing(store, name, rows, me, now) for name, rows in names.items()]
    return [c for c in found if c is not None]


def overlap(a: "Boot", b: "Boot", me: "Optional[str]") -> "bool":
    """Whether ``a`` and ``b`` were active at once: each stamped after the other's
    first stamp (boot ``me`` is active now)."""
    a_last = _NOW if a.boot_id == me else a.last_seq
    b_last = _NOW if b.boot_id == me else b.last_seq
    return a_last >= b.first_seq and b_last >= a.first_seq


def _ago(seconds: "float") -> "str":
    s = max(0, int(seconds))
    if s < 120:
        return "%ds ago" % s
    return "%dm ago" % (s // 60) if s < 7200 else "%dh ago" % (s // 3600)


class Conflict:
    """The boots of one node name (``node``) that were active at once and still count,
    seen by boot ``me`` (None: by an onlooker), at the database's ``now``."""

    __slots__ = ("node", "boots", "me", "now")

    def __init__(self, node: "str", boots: "list[Boot]", me: "Optional[str]",
                 now: "float") -> "None":
        self.node = node
        self.boots = boots
        self.me = me
        self.now = now

    def strangers(self) -> "frozenset[str]":
        """The boot ids of the other hosts: every boot involved but the onlooker's."""
        return frozenset(b.boot_id for b in self.boots if b.boot_id != self.me)

    def hosts(self) -> "str":
        """Each host by its boot id (what tells clones apart: ``cat
        /proc/sys/kernel/random/boot_id`` on a host says which it is) and host name."""
        parts = []
        for b in self.boots:
            when = "this host" if b.boot_id == self.me else "last active %s" % _ago(
                self.now - b.seen_at)
            parts.append("boot %s (host name %s, %s)" % (b.boot_id, b.host or "?", when))
        return "node name %s is used by %d hosts at once: %s" % (
            self.node, len(self.boots), " and ".join(parts))

    def remedy(self) -> "str":
        return ("give all but one of them another ipam.node; once the others are gone "
                "(removed, reinstalled, renamed), 'ipamctl --node %s node claim' on the "
                "host that keeps the name takes it back" % self.node)

    def warning(self) -> "str":
        """ADD's line on stderr."""
        return "%s; GC for this name is refused until that ends: %s" % (
            self.hosts(), self.remedy())

    def refusal(self) -> "str":
        """Why a GC for the name releases nothing."""
        return "%s; %s" % (self.hosts(), self.remedy())
