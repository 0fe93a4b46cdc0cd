"""The hot path's byte-code in one file, served to the launcher without importlib's search.

Importing a module costs about 120 us here on top of running its body: importlib's
finders and loaders are Python code, and each module is a stat, an open and a read of
its ``.pyc``. The hot path's modules (:data:`HOT_PATH`, 22 of them when this was
measured) spent about 1 ms of CPU on that, 5% of a launched call (measured against the
same launcher without the bundle). ``ipamctl install-plugin`` therefore writes their
code objects into one file beside the package's byte-code, and the launcher serves them
from it.

Each entry records its source file's mtime and size, and the file records the
interpreter's byte-code magic number, as a ``.pyc`` does. If anything differs (the
package was upgraded or edited, or another Python runs the launcher), nothing is served
from it: the plugin imports the usual way, only slower, and says so on stderr.
"""
import marshal
import sys

from ipam import system

try:
    from _frozen_importlib import ModuleSpec  # CPython: already loaded, unlike importlib
except ImportError:  # pragma: no cover - another implementation
    from importlib.machinery import ModuleSpec

# The modules a plugin call runs in process (ADD with resolvConf, CHECK, DEL), besides
# those imported before the bundle is read: the package, this module and its package,
# ipam.system, and the client's (ipam.client, ipam.process, ipam.paths), which a call
# forwarded to the node daemon runs alone. A test keeps the list exact.
HOT_PATH = (
    "ipam.errors", "ipam.addr", "ipam.lease", "ipam.allocator", "ipam.ranges",
    "ipam.config", "ipam.jsonio", "ipam.result", "ipam.store.backend", "ipam.store.location",
    "ipam.mirror.files", "ipam.mirror", "ipam.mirror.contents", "ipam.commands", "ipam.cni",
    "ipam.store.writer_lock", "ipam.waits",
    "ipam.store.schema_version", "ipam.store.sqlite_module", "ipam.store.sqlite_db", "ipam.store",
    "ipam.store.table", "ipam.store.sqlite",
    "ipam.dns", "ipam.node_boots",
)
PACKAGE_DIR = system.dirname(system.dirname(__file__))  # ipam/, whose modules it serves


def path(package_dir=PACKAGE_DIR):
    return system.join(package_dir, "__pycache__/launcher-bundle.%s.marshal"
                       % sys.implementation.cache_tag)


def _unannotated(source, filename):
    """The module's syntax tree without its functions' annotations. They are for mypy;
    in byte-code, their constants added a fifth to the bundle's unmarshalling (50 us of
    each launch, measured: 250 -> 300 us). Nothing reads them at run time, and a
    traceback's line numbers are the source's all the same."""
    import ast

    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None:
                    arg.annotation = None
            node.returns = None
    return tree


def _magic():
    try:
        from _frozen_importlib_external import MAGIC_NUMBER  # CPython: already loaded
    except ImportError:  # pragma: no cover - another implementation
        from importlib.util import MAGIC_NUMBER
    return MAGIC_NUMBER


def build(package_dir=PACKAGE_DIR):
    """Compile :data:`HOT_PATH` from ``package_dir`` into :func:`path`, atomically;
    returns the file written. OSError when the package directory is read-only."""
    import os

    entries = []
    for name in HOT_PATH:
        src = os.path.join(package_dir, *name.split(".")[1:])
        src = os.path.join(src, "__init__.py") if os.path.isdir(src) else src + ".py"
        st = os.stat(src)
        with open(src, "rb") as f:
            code = compile(_unannotated(f.read(), src), src, "exec", dont_inherit=True)
        entries.append((name, src, st.st_mtime_ns, st.st_size, code))
    from ipam.install.launcher import replace_file  # ipamctl only: not on the launcher's path

    target = path(package_dir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    replace_file(target, marshal.dumps((_magic(), tuple(entries))), 0o644)
    return target


TYPE_CHECKING = False
if TYPE_CHECKING:  # the loader interface it keeps, for mypy: importlib.abc costs a load
    from importlib.abc import Loader as _Loader
else:
    _Loader = object


class _Finder(_Loader):
    """A meta-path finder for the bundle's modules; each is executed once, then the
    entry goes, so a module whose import failed is retried the usual way."""

    def __init__(self, codes):
        self.codes = codes

    def find_spec(self, name, path=None, target=None):
        entry = self.codes.get(name)
        if entry is None:
            return None
        src = entry[0]
        package = src.endswith("/__init__.py")
        spec = ModuleSpec(name, self, origin=src, is_package=package)
        if package:  # its submodules are found beside it, bundled or not
            spec.submodule_search_locations = [system.dirname(src)]
        spec.has_location = True  # __file__ is the source, as for a normal import
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.codes.pop(module.__name__)[1], module.__dict__)


def load(package_dir=PACKAGE_DIR):
    """Serve the bundle's modules from now on if it matches the sources; True if so."""
    try:
        with open(path(package_dir), "rb") as f:
            magic, entries = marshal.loads(f.read())
    except FileNotFoundError:
        return False  # never built: the usual imports, silently
    except (OSError, EOFError, ValueError, TypeError) as e:
        return _stale("unreadable: %s" % e)
    if magic != _magic():
        return _stale("written by another Python")
    codes = {}
    try:
        for name, src, mtime_ns, size, code in entries:
            try:
                st = system.stat(src)
            except OSError:
                return _stale("%s is gone" % src)
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                return _stale("%s has changed" % src)
            codes[name] = (src, code)
    except (ValueError, TypeError) as e:
        return _stale("unreadable: %s" % e)
    sys.meta_path.insert(0, _Finder(codes))
    return True


def _stale(why):
    sys.stderr.write("host-local-sqlite: the launcher's byte-code bundle is out of date "
                     "(%s); it still works, more slowly: run 'ipamctl install-plugin' "
                     "again\n" % why)
    return False
