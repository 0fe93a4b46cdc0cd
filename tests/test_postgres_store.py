"""PostgresStore on a real PostgreSQL server: what the contract tests cannot show.

Node scope, the schema the migrations make there, the retry when a connection is lost
at COMMIT (both outcomes), the integrity check, and a database from a newer version.
The multi-node process tests live in test_shared_pool.py.
"""
import ipaddress

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import run_inprocess, upgrade_pg_to

from ipam.errors import Retry
from ipam.lease import Lease
from ipam.store import migrate, schema, schema_version
from ipam.store.postgres import PostgresStore, conninfo

ip = ipaddress.ip_address


def make(url, tmp_path, node, scope=True):
    return PostgresStore(url, node=node, scope=scope, lock_path=str(tmp_path / (node + ".lock")))


def conf(url, data_dir, node="node-a", **ipam):
    return {"cniVersion": "1.0.0", "name": "shared", "type": "bridge",
            "ipam": dict({"type": "host-local-sqlite", "subnet": "10.70.0.0/24",
                          "dataDir": str(data_dir), "database": url, "node": node}, **ipam)}


def test_migrations_make_the_declared_schema_on_postgresql(pg_url):
    assert migrate.upgrade(pg_url) == schema_version.HEAD
    assert migrate.current(pg_url) == schema_version.HEAD
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
            indexes = {i["name"]: i for i in sqlalchemy.inspect(conn).get_indexes("leases")}
            # The partial index that makes "first free address" two probes.
            assert "ix_leases_run_end" in indexes
            where = conn.execute(sqlalchemy.text(
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                "WHERE indexrelid = 'ix_leases_run_end'::regclass")).scalar()
            assert where == "next_free"
    finally:
        engine.dispose()
    assert migrate.upgrade(pg_url) == schema_version.HEAD  # idempotent


def test_each_node_sees_its_own_leases_and_allocation_sees_all(pg_url, tmp_path):
    a, b = make(pg_url, tmp_path, "node-a"), make(pg_url, tmp_path, "node-b")
    every = make(pg_url, tmp_path, "admin", scope=None)
    try:
        with a.transaction():
            a.reserve(Lease("n", ip("10.0.0.2"), 0, "ca", "eth0"), "add")
        with b.transaction():
            assert b.lease_at("n", ip("10.0.0.2")).node == "node-a"  # the whole pool
            assert b.first_free("n", ip("10.0.0.2"), ip("10.0.0.9")) == ip("10.0.0.3")
            b.reserve(Lease("n", ip("10.0.0.3"), 0, "cb", "eth0"), "add")
        with a.transaction():
            assert [x.container_id for x in a.leases("n")] == ["ca"]
        with b.transaction():
            assert [x.container_id for x in b.leases()] == ["cb"]
        with every.transaction():
            assert [(x.container_id, x.node) for x in every.leases("n")] == [
                ("ca", "node-a"), ("cb", "node-b")]
            assert [e.node for e in every.history("n")] == ["node-a", "node-b"]
    finally:
        for s in (a, b, every):
            s.close()


class _LoseConnectionAtCommit:
    """Makes the first COMMIT's connection really die: the server process is terminated
    (pg_terminate_backend) before the COMMIT is sent, or, with ``landed``, right after
    the server committed and before the client hears it (the next read on the
    connection finds it gone)."""

    def __init__(self, monkeypatch, landed):
        self.fired = False
        self.landed = landed
        real_exec = PostgresStore._exec
        hook = self

        def kill(store):
            import psycopg

            with psycopg.connect(store._conninfo, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)",
                              (store.conn.info.backend_pid,))

        def exec_(store, sql, params=()):
            if sql != "COMMIT" or hook.fired:
                return real_exec(store, sql, params)
            hook.fired = True
            if hook.landed:
                real_exec(store, sql, params)
                kill(store)
                return real_exec(store, "SELECT 1")
            kill(store)
            return real_exec(store, sql, params)

        monkeypatch.setattr(PostgresStore, "_exec", exec_)


@pytest.mark.parametrize("landed", [True, False], ids=["commit-landed", "commit-lost"])
def test_connection_lost_at_commit_never_allocates_twice(pg_url, tmp_path, monkeypatch,
                                                         landed):
    migrate.upgrade(pg_url)
    data_dir = tmp_path / "data"
    hook = _LoseConnectionAtCommit(monkeypatch, landed)
    out = run_inprocess("ADD", conf(pg_url, data_dir), container_id="c1")
    assert hook.fired and out.status == 0, out
    assert out.json["ips"][0]["address"] == "10.70.0.2/24"
    monkeypatch.undo()
    every = make(pg_url, tmp_path, "admin", scope=None)
    try:
        with every.transaction():
            assert [(str(x.ip), x.container_id) for x in every.leases()] == [("10.70.0.2", "c1")]
            assert [e.event for e in every.history()] == ["allocate"]
            assert every.integrity() == []
    finally:
        every.close()
    assert (data_dir / "shared" / "10.70.0.2").read_bytes() == b"c1\r\neth0"
    assert sorted(p.name for p in (data_dir / "shared").iterdir()) == [
        "10.70.0.2", "last_reserved_ip.0", "lock"]


def test_retries_are_bounded_and_end_in_code_11(pg_url, tmp_path, monkeypatch):
    migrate.upgrade(pg_url)
    calls = []

    def always_conflict(store, network, n_sets):
        calls.append(network)
        raise Retry("simulated clash")

    monkeypatch.setattr(PostgresStore, "lock_network", always_conflict)
    monkeypatch.setattr("ipam.store.postgres.retry_delays", lambda *a, **k: [0.0] * 5)
    out = run_inprocess("ADD", conf(pg_url, tmp_path / "data"), container_id="c1")
    assert out.status != 0 and out.json["code"] == 11, out
    assert len(calls) == 6


def test_integrity_finds_a_wrong_next_free_flag(pg_url, pg_server, tmp_path):
    migrate.upgrade(pg_url)
    s = make(pg_url, tmp_path, "node-a")
    try:
        with s.transaction():
            for k in (2, 3, 5):
                s.reserve(Lease("n", ip("10.0.0.%d" % k), 0, "c%d" % k, "eth0"), "add")
            assert s.integrity() == []
        pg_server.sql(pg_url, "UPDATE leases SET next_free = NOT next_free WHERE ip = '10.0.0.2'")
        with s.transaction():
            assert s.integrity() == ["lease n/10.0.0.2: next_free flag is wrong"]
    finally:
        s.close()


def test_a_newer_schema_is_refused_untouched(pg_url, pg_server, tmp_path):
    migrate.upgrade(pg_url)
    pg_server.sql(pg_url, "UPDATE alembic_version SET version_num = '9999'")
    out = run_inprocess("ADD", conf(pg_url, tmp_path / "data"), container_id="c1")
    assert out.status != 0 and out.json["code"] == 7, out
    assert "9999" in out.json["msg"] and "newer" in out.json["msg"]
    assert pg_server.sql(pg_url, "SELECT count(*) FROM leases") == [(0,)]


def test_invalid_node_names_are_config_errors(pg_url, tmp_path):
    for node in ("", "  ", "a\nb", 7):
        out = run_inprocess("ADD", conf(pg_url, tmp_path / "data", node=node),
                            container_id="c1")
        assert out.status != 0 and out.json["code"] == 7, (node, out)


def test_unsupported_url_schemes_are_config_errors(tmp_path):
    for url in ("mysql://u@h/db", "oracle://h/db"):
        out = run_inprocess("ADD", conf(url, tmp_path / "data"), container_id="c1")
        assert out.status != 0 and out.json["code"] == 7, (url, out)
        assert "not supported" in out.json["msg"]


def test_cni_gc_from_a_node_touches_only_its_own_leases(pg_url, tmp_path):
    migrate.upgrade(pg_url)
    dirs = {n: tmp_path / n for n in ("node-a", "node-b")}
    for n, cid in (("node-a", "a1"), ("node-b", "b1"), ("node-a", "a2")):
        assert run_inprocess("ADD", conf(pg_url, dirs[n], node=n), container_id=cid).status == 0
    gc_conf = dict(conf(pg_url, dirs["node-a"], node="node-a"), cniVersion="1.1.0")
    gc_conf["cni.dev/valid-attachments"] = [{"containerID": "a2", "ifname": "eth0"}]
    out = run_inprocess("GC", gc_conf, container_id=None, ifname=None, netns=None)
    assert out.status == 0, out
    every = make(pg_url, tmp_path, "admin", scope=None)
    try:
        with every.transaction():
            assert [(x.container_id, x.node) for x in every.leases("shared")] == [
                ("b1", "node-b"), ("a2", "node-a")]
    finally:
        every.close()
    assert sorted(p.name for p in (dirs["node-a"] / "shared").iterdir()) == [
        "10.70.0.4", "last_reserved_ip.0", "lock"]
    assert (dirs["node-b"] / "shared" / "10.70.0.3").read_bytes() == b"b1\r\neth0"


def test_a_shared_pool_never_adopts_host_local_files(pg_url, tmp_path):
    """Each node's host-local pool overlapped the others': importing one node's files
    silently would be arbitrary. ``ipamctl import`` reports the conflicts instead. A
    file met while allocating is still never replaced: it is recorded and skipped."""
    migrate.upgrade(pg_url)
    data_dir = tmp_path / "data"
    (data_dir / "shared").mkdir(parents=True)
    (data_dir / "shared" / "10.70.0.2").write_bytes(b"old\r\neth0")
    (data_dir / "shared" / "10.70.0.9").write_bytes(b"older\r\neth0")
    out = run_inprocess("ADD", conf(pg_url, data_dir), container_id="c1")
    assert out.status == 0, out
    assert pg_server_leases(pg_url, tmp_path) == [("10.70.0.2", "old"), ("10.70.0.3", "c1")]
    assert (data_dir / "shared" / "10.70.0.2").read_bytes() == b"old\r\neth0"


def pg_server_leases(url, tmp_path):
    every = make(url, tmp_path, "admin", scope=None)
    try:
        with every.transaction():
            return [(str(x.ip), x.container_id) for x in every.leases()]
    finally:
        every.close()


def test_each_node_mirrors_its_own_cursor_and_check_agrees(pg_url, tmp_path):
    """The pool's cursor moves with every node; a node's last_reserved_ip.0 is, as in
    host-local, the last address that node reserved, and check/export leave it be."""
    import json

    from helpers import ipamctl

    migrate.upgrade(pg_url)
    dirs = {n: tmp_path / n for n in ("node-a", "node-b")}
    for n, cid in (("node-a", "a1"), ("node-b", "b1")):
        assert run_inprocess("ADD", conf(pg_url, dirs[n], node=n), container_id=cid).status == 0
    assert (dirs["node-a"] / "shared" / "last_reserved_ip.0").read_text() == "10.70.0.2"
    assert (dirs["node-b"] / "shared" / "last_reserved_ip.0").read_text() == "10.70.0.3"
    for n, d in dirs.items():
        for args in (["check"], ["export"], ["check"]):
            out = ipamctl("--node", n, "--data-dir", str(d), "-o", "json", *args,
                          database=pg_url)
            if args == ["check"]:
                assert json.loads(out.stdout) == {"ok": True, "problems": [], "findings": []}
    assert (dirs["node-a"] / "shared" / "last_reserved_ip.0").read_text() == "10.70.0.2"


def test_nodes_with_their_own_data_dirs_do_not_rewrite_the_network_row(pg_url, pg_server,
                                                                        tmp_path):
    migrate.upgrade(pg_url)
    assert run_inprocess("ADD", conf(pg_url, tmp_path / "a", node="node-a"),
                         container_id="a1").status == 0
    first = pg_server.sql(pg_url, "SELECT data_dir, updated_at FROM networks")
    assert run_inprocess("ADD", conf(pg_url, tmp_path / "b", node="node-b"),
                         container_id="b1").status == 0
    assert pg_server.sql(pg_url, "SELECT data_dir, updated_at FROM networks") == first
    # A change every node shares (the ranges) is written.
    changed = conf(pg_url, tmp_path / "b", node="node-b", rangeEnd="10.70.0.100")
    assert run_inprocess("ADD", changed, container_id="b2").status == 0
    assert pg_server.sql(pg_url, "SELECT updated_at FROM networks") != [(first[0][1],)]


def _raw(url):
    return sqlalchemy.create_engine(url, isolation_level="READ COMMITTED",
                                    poolclass=sqlalchemy.pool.NullPool)


def test_real_unique_clashes_and_deadlocks_are_retryable(pg_url, tmp_path):
    """The errors PostgreSQL really raises, not look-alikes: a duplicate (network, ip)
    from another writer and a deadlock between two transactions both become Retry."""
    import threading

    migrate.upgrade(pg_url)
    store = make(pg_url, tmp_path, "node-a")
    engine = _raw(pg_url)
    row = dict(network="n", ip="10.0.0.2", ip_key=bytes(15) + b"\x02", next_free=True,
               range_set=0, container_id="c", allocated_at=1.0)
    try:
        with engine.begin() as conn:
            conn.execute(schema.leases.insert().values(**row))
        with pytest.raises(sqlalchemy.exc.IntegrityError) as clash:
            with engine.begin() as conn:
                conn.execute(schema.leases.insert().values(**row))
        assert isinstance(store.translate(clash.value), Retry)

        with engine.begin() as conn:
            conn.execute(schema.cursors.insert().values(
                [dict(network="n", range_set=i, ip="") for i in (0, 1)]))
        barrier = threading.Barrier(2)
        errors = []

        def lock(first, second):
            try:
                with engine.begin() as conn:
                    for k, idx in enumerate((first, second)):
                        conn.execute(schema.cursors.select().where(
                            schema.cursors.c.range_set == idx).with_for_update()).all()
                        if k == 0:
                            barrier.wait(timeout=10)
            except sqlalchemy.exc.DBAPIError as e:
                errors.append(e)
        threads = [threading.Thread(target=lock, args=p) for p in ((0, 1), (1, 0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(errors) == 1, errors
        assert isinstance(store.translate(errors[0]), Retry)
        assert "deadlock" in str(errors[0]).lower()
    finally:
        engine.dispose()
        store.close()


def test_an_older_schema_on_postgresql_is_upgraded_in_place(pg_url, pg_server, tmp_path):
    """A pool made by revision 0002 (before leases recorded their node) keeps its leases
    through the upgrade the next plugin call runs; they simply have no node."""
    upgrade_pg_to(pg_url, "0002")
    pg_server.sql(pg_url, "INSERT INTO leases (network, ip, ip_key, next_free, range_set, "
                          "container_id, ifname, allocated_at) VALUES ('shared', '10.70.0.2', "
                          "%s, true, 0, 'old', 'eth0', 1.0)",
                  (bytes(10) + b"\xff\xff" + bytes([10, 70, 0, 2]),))
    out = run_inprocess("ADD", conf(pg_url, tmp_path / "data"), container_id="new")
    assert out.status == 0, out
    assert out.json["ips"][0]["address"] == "10.70.0.3/24"
    assert migrate.current(pg_url) == schema_version.HEAD
    assert pg_server.sql(pg_url, "SELECT container_id, node FROM leases ORDER BY ip") == [
        ("old", None), ("new", "node-a")]


def test_an_unsupported_url_creates_nothing(tmp_path):
    data_dir = tmp_path / "not-yet"
    out = run_inprocess("ADD", conf("mysql://u@h/db", data_dir), container_id="c1")
    assert out.status != 0 and out.json["code"] == 7, out
    assert not data_dir.exists()


def test_a_kept_connection_survives_a_schema_change_under_its_prepared_statements(
        pg_url, tmp_path):
    """The node daemon's stores prepare their statements and keep their connection. When
    ``ipamctl db upgrade`` (here: an ALTER by hand) changes a column's type under them,
    PostgreSQL refuses a prepared statement whose result type changed ("cached plan must
    not change result type"); the call is retried on a new connection, not failed."""
    import psycopg

    from ipam.commands import CallContext
    from ipam.daemon.pool import StorePool

    migrate.upgrade(pg_url)
    pool = StorePool(1)
    context = CallContext(pool=pool)
    data_dir = tmp_path / "data"
    for i in range(3):
        out = run_inprocess("ADD", conf(pg_url, data_dir), context, container_id="c%d" % i)
        assert out.status == 0, out
    with psycopg.connect(conninfo(pg_url), autocommit=True) as admin:
        admin.execute("ALTER TABLE leases ALTER COLUMN ifname TYPE varchar(64)")
    out = run_inprocess("ADD", conf(pg_url, data_dir), context,
                        container_id="c1")  # reads ifname
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.70.0.3/24", out
    assert pool.opened == 1  # the same store, on a new connection
    pool.close()
