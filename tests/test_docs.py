"""The documents' relative links lead somewhere: every link in README.md and docs/*.md that
is not a URL names a file of this repository, and its ``#anchor``, if any, names a
heading of that file (as GitHub derives anchors from headings).

Moving a section to another file, or renaming a heading, would otherwise leave a link
that a reader only finds broken on GitHub.

The README is a front door: short enough to read (at most 25,000 bytes: an overview, the
quick start, the command table, a short install), and it links every page of docs/, so
that no page is found only by browsing the repository.

And docs/guarantees.md names real tests, and its entry-path columns say what they run."""
import importlib
import inspect
import os
import re

import pytest
from docs_pages import PAGES, README, ROOT, read

DOCS = PAGES
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text):
    """The lines of a Markdown text outside fenced code blocks, with code spans blanked
    (a link shown as code is not a link)."""
    block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            block = not block
            continue
        if not block:
            yield re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)


def anchors(path):
    """The anchors GitHub gives the headings of a Markdown file: the heading's text
    lower-cased, without punctuation but ``-`` and ``_``, spaces turned into ``-``; a
    repeated one gets ``-1``, ``-2``..."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    seen, out = {}, set()
    block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            block = not block
            continue
        m = None if block else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda x: x.group(1) or "", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else "%s-%d" % (slug, n))
    return out


def links():
    """``(document, target)`` of every relative link in the documents."""
    found = []
    for doc in DOCS:
        text = read(doc)
        # Joined again: a link's text may wrap onto the next line.
        for target in LINK.findall("\n".join(_prose(text))):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                found.append((doc, target))
    return found


LINKS = links()


def test_the_documents_have_relative_links():
    """The extraction finds them (an empty list would prove nothing)."""
    assert len(LINKS) >= 8, LINKS


@pytest.mark.parametrize("doc,target", LINKS, ids=["%s->%s" % x for x in LINKS])
def test_every_relative_link_leads_somewhere(doc, target):
    path, _, anchor = target.partition("#")
    where = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path \
        else os.path.join(ROOT, doc)
    assert os.path.commonpath([where, ROOT]) == ROOT, (doc, target, "outside the repository")
    assert os.path.exists(where), (doc, target, "no such file")
    if anchor:
        assert where.endswith(".md"), (doc, target, "an anchor into a file that is not Markdown")
        assert anchor in anchors(where), (doc, target, sorted(anchors(where)))


README_LIMIT = 25_000  # bytes


def test_the_readme_is_a_front_door():
    """What outgrows the README moves to a page under docs/, linked from it."""
    size = os.path.getsize(os.path.join(ROOT, README))
    assert size <= README_LIMIT, "README.md is %d bytes, more than %d: move a section to " \
        "a page under docs/ and link it" % (size, README_LIMIT)


def test_the_readme_links_every_page():
    linked = {os.path.normpath(target.partition("#")[0]) for doc, target in LINKS
              if doc == README}
    pages = [page for page in PAGES if page != README]
    assert len(pages) >= 10, pages  # the README's sections moved there
    assert [page for page in pages if page not in linked] == []


def test_anchors_follow_githubs_rule(tmp_path):
    """The anchor rule itself, on headings of the kinds the README has."""
    page = tmp_path / "page.md"
    page.write_text("# host-local-sqlite\n## Installing into a CNI bin directory\n"
                    "### Automatic adoption, and host-local beside it\n"
                    "### JSON output (a stable contract)\n## GC and STATUS (CNI 1.1.0)\n"
                    "```sh\n# not a heading\n```\n## `ipamctl`: see and manage leases\n"
                    "## Notes\n## Notes\n")
    assert anchors(str(page)) == {
        "host-local-sqlite", "installing-into-a-cni-bin-directory",
        "automatic-adoption-and-host-local-beside-it", "json-output-a-stable-contract",
        "gc-and-status-cni-110", "ipamctl-see-and-manage-leases", "notes", "notes-1"}


# -- docs/guarantees.md: the entry paths each guarantee's tests run through ---------------
GUARANTEES = os.path.join(ROOT, "docs", "guarantees.md")
TEST_NAME = re.compile(r"(?:tests/)?(test_\w+\.py)?(?:::(test_\w+))?")


def guarantee_table():
    """The table of docs/guarantees.md: its header's cells, and each row's."""
    with open(GUARANTEES, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]
    return rows[0], rows[2:]


def named_tests(cell):
    """``(module file, function or None: the whole module)`` of each test a "proven by"
    cell names in backticks (``::name``: of the module named before it)."""
    found, module = [], None
    for name in re.findall(r"`([^`]*)`", cell):
        m = TEST_NAME.fullmatch(name)
        if not m or not (m.group(1) or m.group(2)):
            continue  # not a test: ipam/commands.py, a command line
        module = m.group(1) or module
        assert module, (cell, name, "::name with no module named before it")
        found.append((module, m.group(2)))
    return found


def entry_paths_of(module, function, collected):
    """The entry paths a test runs its plugin through: those pytest collects it with
    when it takes ``through``; "in-process" for one marked ``in_process_only``; None
    for any other (it runs the plugin its own way: a daemon's tests, strace's...)."""
    from helpers import marks_of, takes_through

    loaded = importlib.import_module(module[:-3])
    test = getattr(loaded, function, None)
    assert inspect.isfunction(test), "docs/guarantees.md names %s::%s, which is no test" % (
        module, function)
    if takes_through(loaded, test):
        paths = collected.get((module, function))
        assert paths, (module, function, "takes through, collected with no entry path")
        return paths
    if any(m.name == "in_process_only" for m in marks_of(loaded, test)):
        return {"in-process"}
    return None


def expected_mark(paths_of_tests, path):
    """A path's cell in a row: "✓" when every test of the row that has entry paths runs
    through it, "*k of n*" when k of those n do, empty when none (or none has paths)."""
    have = [paths for paths in paths_of_tests if paths is not None]
    k = sum(path in paths for paths in have)
    return "✓" if have and k == len(have) else "*%d of %d*" % (k, len(have)) if k else ""


def test_the_guarantees_entry_path_columns_say_what_the_tests_run():
    """One column per entry path (helpers.ENTRY_PATHS, spaces for dashes), after "proven
    by"; each cell is what the row's named tests are collected with, so a mark can
    neither claim a path a test does not run nor miss one it runs."""
    from helpers import ENTRY_PATHS, collected_entry_paths

    header, rows = guarantee_table()
    assert header == ["guarantee", "proven by"] + [p.replace("-", " ") for p in ENTRY_PATHS]
    named = [named_tests(row[1]) for row in rows]
    modules = sorted({module for tests in named for module, _ in tests})
    collected = collected_entry_paths(modules)
    wrong = []
    for row, tests in zip(rows, named, strict=True):
        assert len(row) == len(header), row[0]
        functions = []
        for module, function in tests:
            if function is None:
                loaded = importlib.import_module(module[:-3])
                functions += [(module, name) for name, test in sorted(vars(loaded).items())
                              if name.startswith("test_") and inspect.isfunction(test)]
            else:
                functions.append((module, function))
        paths = [entry_paths_of(module, function, collected) for module, function in functions]
        for path, cell in zip(ENTRY_PATHS, row[2:], strict=True):
            if cell != expected_mark(paths, path):
                wrong.append("%s... | %s: %r, the tests say %r" % (
                    row[0][:50], path, cell, expected_mark(paths, path)))
    assert wrong == [], "\n".join(wrong)
