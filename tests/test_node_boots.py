"""ipam.node_boots: the rules that tell two hosts using one node name from one host that
rebooted, on the fake, SQLite and PostgreSQL stores alike. Each test passes the boot ids
of the hosts it plays; tests/test_node_conflict.py runs the same through real plugin and
ipamctl processes, each host with its own boot id file."""
import ipaddress

import pytest

from ipam import node_boots
from ipam.lease import Lease


def call(store, boot, judge=True):
    """One plugin call's part: its transaction's stamp and verdict."""
    with store.transaction():
        return node_boots.note(store, boot, judge)


def age(store, boot, seconds):
    """Make ``boot``'s last stamp ``seconds`` older, as time passing would."""
    now, boots = store.boots(store.node)
    for b in boots:
        if b.boot_id == boot:
            b.seen_at -= seconds
            with store.transaction():
                store.stamp_boot(b)
    return now


def lease_of(store, boot, address="10.0.0.2"):
    with store.transaction():
        store.reserve(Lease("n", ipaddress.ip_address(address), 0, "c-" + address, "eth0",
                            boot_id=boot, node=store.node), "add")


def test_one_host_calling_again_and_again_is_no_conflict(store):
    for _ in range(3):
        assert call(store, "boot-a") is None
    assert [b.boot_id for b in store.boots(store.node)[1]] == ["boot-a"]


def test_a_reboot_is_no_conflict_however_soon_the_new_boot_calls(store):
    """The old boot's last stamp precedes the new boot's first: no window to wait out,
    even with leases of the old boot left (they are leftovers for gc --previous-boots)."""
    assert call(store, "boot-1") is None
    lease_of(store, "boot-1")
    assert call(store, "boot-2") is None
    assert call(store, "boot-2") is None
    assert call(store, "boot-3") is None


def test_two_hosts_calling_in_turn_see_each_other(store):
    assert call(store, "host-a") is None
    # B's first call: A's last stamp came before it, as a reboot's would
    assert call(store, "host-b") is None
    # A's next call finds a boot that began after its last stamp: a second host
    seen_by_a = call(store, "host-a")
    assert seen_by_a is not None and seen_by_a.node == store.node
    assert {b.boot_id for b in seen_by_a.boots} == {"host-a", "host-b"}
    assert "host-a" in seen_by_a.warning() and "host-b" in seen_by_a.warning()
    # ... and stamped itself, so that B sees A at once too
    seen_by_b = call(store, "host-b")
    assert seen_by_b is not None and "this host" in seen_by_b.refusal()
    # an onlooker (ipamctl on a third machine) sees it as well
    with store.transaction():
        assert [c.node for c in node_boots.conflicts(store, store.node, "elsewhere")] \
            == [store.node]


def test_a_conflict_ends_when_the_other_host_is_quiet_and_holds_nothing(store):
    call(store, "host-a")
    call(store, "host-b")
    assert call(store, "host-a") is not None
    age(store, "host-b", node_boots.ACTIVE_WINDOW - 30)
    assert call(store, "host-a") is not None  # quiet for less than the window
    age(store, "host-b", 60)
    assert call(store, "host-a") is None


def test_a_quiet_host_still_holding_leases_keeps_the_conflict(store):
    """Its pods may run without a call for hours: their leases are what GC would take."""
    call(store, "host-a")
    call(store, "host-b")
    lease_of(store, "host-b")
    assert call(store, "host-a") is not None
    age(store, "host-b", 30 * 86400)
    assert call(store, "host-a") is not None
    # a reboot of A changes nothing: A's old boot and B overlapped, and both count
    lease_of(store, "host-a", "10.0.0.3")
    assert call(store, "host-a2") is not None


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql",
                                                         marks=pytest.mark.postgres)])
def test_a_call_writes_its_stamp_once_a_minute(engine, tmp_path, request):
    """The hot path's cost: one read per call, and a write only when the stamp is
    STAMP_EVERY old (or another boot began after it)."""
    from ipam.store.backend import open_store

    database = (str(tmp_path / "leases.db") if engine == "sqlite"
                else request.getfixturevalue("pg_url"))
    store = open_store(database, data_dir=str(tmp_path))
    request.addfinalizer(store.close)
    def statements(*args):
        sent = store.round_trips
        call(store, *args)
        return store.round_trips - sent

    statements(None)  # the schema created, the connection made
    bare = statements(None)  # a transaction that stamps nothing: BEGIN, revision, COMMIT
    assert statements("boot-a") == bare + 2  # the first: the read and the stamp
    assert statements("boot-a", False) == bare + 1  # then the read alone
    assert statements("boot-a") == bare + 1
    age(store, "boot-a", node_boots.STAMP_EVERY)
    assert statements("boot-a") == bare + 2  # a minute on: the stamp again


def test_no_boot_id_records_nothing(store):
    assert call(store, None) is None
    assert store.boots(store.node)[1] == []


def test_a_new_boot_drops_records_a_week_old_unless_they_hold_leases(store):
    for boot in ("boot-1", "boot-2", "boot-3"):
        call(store, boot)
    lease_of(store, "boot-2")
    age(store, "boot-1", node_boots.KEEP + 60)
    age(store, "boot-2", node_boots.KEEP + 60)
    call(store, "boot-3")  # not a new boot: no pruning on the hot path
    assert len(store.boots(store.node)[1]) == 3
    call(store, "boot-4")
    assert [b.boot_id for b in store.boots(store.node)[1]] == ["boot-2", "boot-3", "boot-4"]
