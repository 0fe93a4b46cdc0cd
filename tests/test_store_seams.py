"""The seams around the store: the plugin's ``Store`` is what a CNI command uses, and no
more (host-local's store has seven methods: ours stays as small as its commands let
it); ipamctl's queries are ``AdminStore``'s; the tests' fake is not shipped. mypy holds
the rest (tests/typing_seams.py, read by ``make typecheck``)."""
import ast
import importlib
import importlib.util
import inspect

from ipam.store.protocol import AdminStore, Store

# What one CNI command runs, and the node daemon's pool of its stores.
PLUGIN_MODULES = ("ipam.commands", "ipam.allocator", "ipam.mirror.files",
                  "ipam.mirror.reconcile", "ipam.node_boots", "ipam.daemon.pool")


def _names_a_store(node: ast.expr) -> bool:
    """``store``, ``files.store``, ``self._store``, ``opened.take_store()``."""
    if isinstance(node, ast.Name):
        return node.id == "store"
    if isinstance(node, ast.Attribute):
        return node.attr in ("store", "_store")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "take_store"
    return False


def used_by(module_name: str) -> set[str]:
    """The store's attributes and methods a module's code uses."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and _names_a_store(node.value)}


def members(protocol: type) -> set[str]:
    own = set(vars(protocol).get("__annotations__", {})) | set(vars(protocol))
    return {m for m in own if not m.startswith("_")}


def test_the_plugins_store_is_what_a_command_uses():
    used = set().union(*(used_by(m) for m in PLUGIN_MODULES))
    assert used - members(Store) == set(), "a command uses what its Store does not have"
    assert members(Store) - used == set(), "the plugin's Store has what no command uses"


def test_ipamctls_queries_are_the_admin_stores_alone():
    admin_only = members(AdminStore)
    assert admin_only and not admin_only & members(Store)
    assert {"history", "networks", "integrity", "forget_network", "scope"} <= admin_only


def test_the_fake_store_is_not_shipped():
    """The in-memory fake forgets everything: nothing a user runs may use it (``import
    --dry-run`` plans against an empty SQLite database of its own)."""
    assert importlib.util.find_spec("ipam.store.memory") is None
    import fake_store

    assert not fake_store.__name__.startswith("ipam")
