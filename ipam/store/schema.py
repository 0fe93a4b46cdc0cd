"""The database schema, defined once (SQLAlchemy Core).

This module is the alembic target metadata and the single description of the tables.
The plugin's hot path never imports it (SQLAlchemy costs 200+ ms); it speaks plain SQL to
these same tables through :mod:`ipam.store.table` on both engines, and a test proves the
migrations create exactly what is declared here.
"""
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Named constraints, so that migrations can refer to them on every engine.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

def pod_columns() -> "list[Column[str]]":
    """Who the attachment is, as the runtime said in CNI_ARGS on ADD (``K8S_POD_NAMESPACE``,
    ``K8S_POD_NAME``, ``K8S_POD_UID``; podman sends its container name as the pod name).
    For people and ``ipamctl`` filters only: the owner is (container_id, ifname). NULL
    where the runtime sent none, and for leases made before revision 0006, imported or
    adopted. No index: only ipamctl reads them, and every ADD and DEL would pay for one.
    """
    return [Column("pod_namespace", String, nullable=True),
            Column("pod_name", String, nullable=True),
            Column("pod_uid", String, nullable=True)]


def id_column() -> "Column[int]":
    """A 64-bit id on PostgreSQL (bigint, from revision 0007: a serial's 2^31 ids run out
    after as many ADDs and DELs); on SQLite ``INTEGER PRIMARY KEY``, the rowid, which
    is 64-bit already and must stay spelled INTEGER to be the rowid."""
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True)


leases = Table(
    "leases",
    metadata,
    id_column(),
    Column("network", String, nullable=False),
    # Canonical text (Go's net.IP String(), which Python's ipaddress also produces).
    Column("ip", String, nullable=False),
    # 16 bytes big-endian, IPv4 as ::ffff:a.b.c.d: sortable on every engine, where a
    # SQLite integer (64 bits) cannot hold an IPv6 address.
    Column("ip_key", LargeBinary(16), nullable=False),
    # True when the address right after this one is not leased in this network. The
    # partial index on it lets "first free address after X" be one index probe
    # instead of a walk along a run of leases.
    Column("next_free", Boolean, nullable=False),
    # Index of the range set in the config that handed it out (the N of last_reserved_ip.N).
    Column("range_set", Integer, nullable=False),
    Column("container_id", String, nullable=False),
    # NULL for a legacy lease imported from a host-local file holding only the ID.
    Column("ifname", String, nullable=True),
    Column("allocated_at", Float, nullable=False),  # seconds since the epoch, UTC
    # The kernel's boot id when the lease was made: netns do not survive a reboot.
    Column("boot_id", String, nullable=True),
    # The node (host name, or the ipam key "node") that holds it: on a database shared
    # by many nodes, each mirrors and garbage-collects only its own leases.
    Column("node", String, nullable=True),
    # CLOCK_BOOTTIME (seconds since boot_id's boot) at allocation: how old a lease is,
    # on a clock that cannot step. NULL for imported leases: they are aged by
    # allocated_at, the wall clock, which stays for display.
    Column("boot_time", Float, nullable=True),
    *pod_columns(),
    UniqueConstraint("network", "ip"),
    UniqueConstraint("network", "ip_key"),
    Index("ix_leases_owner", "network", "container_id", "ifname"),
    Index("ix_leases_network_node", "network", "node"),
    Index(
        "ix_leases_run_end",
        "network",
        "ip_key",
        sqlite_where=text("next_free = 1"),
        postgresql_where=text("next_free"),
    ),
)

# The round-robin cursor: replaces host-local's last_reserved_ip.N file.
cursors = Table(
    "cursors",
    metadata,
    Column("network", String, nullable=False),
    Column("range_set", Integer, nullable=False),
    Column("ip", String, nullable=False),
    PrimaryKeyConstraint("network", "range_set"),
)

# What the plugin last saw of each network's config, written by ADD when it changes:
# ipamctl has no network config, yet stats needs the pool sizes and export/check need to
# know where (and whether) a network is mirrored.
networks = Table(
    "networks",
    metadata,
    Column("network", String, primary_key=True),
    Column("data_dir", String, nullable=False),
    Column("export", Boolean, nullable=False),
    # JSON: per range set, its ranges as {subnet, start, end, gateway, exclude}.
    Column("range_sets", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The state of each node's mirror directory (<dataDir>/<network>) right after our own
# last change to it: inode, mtime and ctime in ns. A different value on the next call
# means someone else (Go host-local, an operator, a restore of the database to an
# older state) changed the directory or the database since, and the network is
# reconciled. Kept in the database, not beside the files, so that a database that
# goes back in time also goes back to a stamp that no longer matches.
mirror_stamps = Table(
    "mirror_stamps",
    metadata,
    Column("network", String, nullable=False),
    Column("node", String, nullable=False),
    Column("stamp", String, nullable=False),
    PrimaryKeyConstraint("network", "node"),
)

# Every allocation and release, for forensics ("who had 10.1.2.3 at 14:05?").
history = Table(
    "history",
    metadata,
    id_column(),
    Column("time", Float, nullable=False),
    Column("event", String, nullable=False),  # allocate | release
    # add | del | gc | admin | import | adopt (a lease found in the mirror, made by
    # another writer) | reconcile (released because another writer reused its address)
    Column("reason", String, nullable=False),
    Column("network", String, nullable=False),
    Column("ip", String, nullable=False),
    Column("container_id", String, nullable=False),
    Column("ifname", String, nullable=True),
    Column("node", String, nullable=True),
    # The lease's pod identity when the event happened (see pod_columns).
    *pod_columns(),
    Index("ix_history_network_ip_time", "network", "ip", "time"),
    Index("ix_history_container_id", "container_id"),
    # "history --ip X" without --network. On SQLite the index holds the rowid too, so an
    # address's events come out in commit order without a sort.
    Index("ix_history_ip", "ip"),
    # --since, "history prune --before" and the historyRetention trim: the oldest first.
    Index("ix_history_time", "time"),
)

# Which hosts use each node name, one row per (name, boot of a host): the kernel's boot
# id tells hosts apart where the name, /etc/machine-id and every key on a cloned disk do
# not. Each plugin call reads its name's rows and rewrites its own when it is a minute
# old (or another boot of the name appeared since); two boots whose activity overlapped
# in the database's own order (``first_seq``..``last_seq``), both still live (seen within
# minutes, or holding leases they made), are two hosts sharing one name: ADD warns and
# every GC of the name is refused (ipam.node_boots). ``ipamctl node claim`` takes the
# name back for one host. Not indexed beyond its key: a name has a row per boot.
node_boots = Table(
    "node_boots",
    metadata,
    Column("node", String, nullable=False),
    Column("boot_id", String, nullable=False),
    # The host name (uname -n) at the last stamp, for people: clones share it too.
    Column("host", String, nullable=True),
    # A number per name, one more than any before it at each stamp: which boot was
    # active after which, without comparing two hosts' clocks (or one host's clock
    # before and after a reboot, which may be set wrong at first).
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    # The database's clock (PostgreSQL's on a shared pool) at the first and last stamp.
    Column("first_seen", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    PrimaryKeyConstraint("node", "boot_id"),
)
