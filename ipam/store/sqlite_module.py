"""The sqlite3 C module, loaded as cheaply as the plugin's one-shot process allows.

``import sqlite3`` runs sqlite3/dbapi2.py, which imports datetime and collections.abc;
the C module ``_sqlite3`` alone is the same API. Its initialisation still imports
``functools`` (for ``lru_cache``, its statement cache), which pulls in ``collections``:
about 4 ms of a 25 ms plugin run, measured. When nothing has imported functools yet, this
module lends ``_sqlite3`` a one-function stand-in for the duration of the import: a
plain dict cache, right for a process that runs a few dozen distinct statements and
exits. The stand-in is removed straight away, so any later ``import functools`` gets
the real one; if importing ``_sqlite3`` beside the stand-in fails, it is imported again
with the real ``functools``.
"""
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Callable


def _statement_cache(maxsize: "int" = 128
                     ) -> "Callable[[Callable[[str], Any]], Callable[[str], Any]]":
    def wrap(factory: "Callable[[str], Any]") -> "Callable[[str], Any]":
        cache: dict[str, Any] = {}

        def get(sql: "str") -> "Any":
            stmt = cache.get(sql)
            if stmt is None:
                stmt = cache[sql] = factory(sql)
            return stmt

        return get

    return wrap


def load() -> "Any":  # the _sqlite3 module, used as sqlite3
    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        import _sqlite3

        return _sqlite3
    stand_in: Any = type(sys)("functools")  # a module of our own making: any attribute
    stand_in.lru_cache = _statement_cache
    sys.modules["functools"] = stand_in
    failed = False
    try:
        import _sqlite3
    except Exception:
        failed = True
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    if failed:  # pragma: no cover - a Python whose _sqlite3 wants more
        sys.modules.pop("_sqlite3", None)
        import _sqlite3
    return _sqlite3


# No fallback to the public module: ``sqlite3`` is itself built on ``_sqlite3`` (its
# dbapi2 star-imports it), so a Python without ``_sqlite3`` has no working ``sqlite3``
# either, and the ImportError from ``load()`` says so directly.
sqlite3 = load()
