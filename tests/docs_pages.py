"""The documents, for the tests that hold them to the code: the README, which is the front
door, and the pages under docs/ it links to.

A section moves between pages as the documents grow (the README's runtimes, daemon and
gc recipes moved to docs/); tests find text by what it is, a heading or a phrase, in
whichever page holds it, so that a move never needs a test changed, and a section that
is lost fails the test that reads it."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = "README.md"
# README.md first, then docs/*.md by name: paths relative to the repository.
PAGES = [README] + sorted(os.path.join("docs", name)
                          for name in os.listdir(os.path.join(ROOT, "docs"))
                          if name.endswith(".md"))
HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def every_page():
    """The text of every page, README first, one after the other."""
    return "\n".join(read(page) for page in PAGES)


def headings(text):
    """``(offset, level, title)`` of each Markdown heading of a text, outside fenced
    code blocks (a shell comment is no heading)."""
    found, block, offset = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            block = not block
        elif not block:
            m = HEADING.fullmatch(line.rstrip("\n"))
            if m:
                found.append((offset, len(m.group(1)), m.group(2)))
        offset += len(line)
    return found


def section(title):
    """``(page, level, text)`` of the one section, in any page, whose heading is
    ``title``: from its heading to the next heading of the same level or higher (a page's
    title: the whole page)."""
    found = []
    for page in PAGES:
        text = read(page)
        marks = headings(text)
        for i, (start, level, name) in enumerate(marks):
            if name == title:
                end = next((o for o, lv, _ in marks[i + 1:] if lv <= level), len(text))
                found.append((page, level, text[start:end]))
    assert len(found) == 1, "heading %r: found in %s" % (title, [p for p, _, _ in found])
    return found[0]


def subsections(title):
    """``{heading: text}`` of the sections one level below ``title``'s, each from the
    line after its heading to the next heading of its level or higher."""
    _, level, text = section(title)
    marks = [m for m in headings(text) if m[1] <= level + 1][1:]
    out = {}
    for i, (start, _, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out[name] = text[start:end].split("\n", 1)[1]
    return out
