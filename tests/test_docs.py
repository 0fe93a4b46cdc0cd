"""The documents' relative links lead somewhere: every link in README.md and docs/*.md that
is not a URL names a file of this repository, and its ``#anchor``, if any, names a
heading of that file (as GitHub derives anchors from headings).

Moving a section to another file, or renaming a heading, would otherwise leave a link
that a reader only finds broken on GitHub."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.join("docs", name)
                              for name in os.listdir(os.path.join(ROOT, "docs"))
                              if name.endswith(".md"))
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
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
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
