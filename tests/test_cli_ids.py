"""Container IDs as an operator reads them in ipamctl's tables and types them back: the
installed ipamctl on a database the plugin wrote.

A table prints a long ID as the shortest start that no other ID of the whole database
has (12 characters at least, of the runtime's digits where a prefix such as nerdctl's
namespace comes first), marked with '...'; that text pasted back into ``list``,
``history``, ``release`` and ``gc`` names the one container. ``--no-trunc`` prints them
whole, and gc says so when its list looks like a runtime's 12-character short IDs."""
import json

from helpers import held, ipamctl, on_terminal

HEX_A = "3f2a9c01b2c4" + "0" * 52  # 64 hexadecimal digits, as runtimes make them
HEX_B = "3f2a9c01b2c4" + "1" * 52  # the same first 12 as A
HEX_C = "77be01a4c2f9" + "2" * 52
# nerdctl gives CNI "<namespace>-<ID>"
NERD_A, NERD_B, NERD_C = ("default-" + h for h in (HEX_A, HEX_B, HEX_C))


def ids_in(table):
    """The CONTAINER_ID column of every table in ``table`` (gc prints several)."""
    out, at = [], None
    for line in table.splitlines():
        if "CONTAINER_ID" in line:
            at = line.index("CONTAINER_ID")
        elif at is not None and len(line) > at and line[at] != " ":
            out.append(line[at:].split()[0])
        else:
            at = None
    return out


def js(data_dir, *args, **kw):
    return json.loads(ipamctl("-o", "json", *args, data_dir=data_dir, **kw).stdout)


def test_nerdctl_ids_show_twelve_of_the_runtime_digits_and_work_when_pasted(add, delete,
                                                                           data_dir):
    """nerdctl's IDs all start 'default-': 12 characters of them showed 4 digits of the
    ID ('default-3f2a...'), which matched nothing 'nerdctl ps' prints."""
    add(NERD_A)
    delete(NERD_A)  # the history alone knows A now: B's start must still differ
    add(NERD_B)
    add(NERD_C)
    listed = ids_in(ipamctl("list", data_dir=data_dir).stdout)
    short_b, short_c = "default-3f2a9c01b2c41...", "default-77be01a4c2f9..."
    assert listed == [short_b, short_c]
    assert ids_in(ipamctl("history", data_dir=data_dir).stdout) == [
        "default-3f2a9c01b2c40...", "default-3f2a9c01b2c40...", short_b, short_c]

    proc = ipamctl("list", "--container", short_c, data_dir=data_dir)
    assert ids_in(proc.stdout) == [short_c]
    assert NERD_C in proc.stderr  # the note says which container the start chose
    assert [e["container_id"] for e in js(data_dir, "history", "--container", short_b)] == [
        NERD_B]
    dry = js(data_dir, "gc", "--valid", short_b, "--valid", short_c, "--grace", "0")
    assert dry["candidates"] == [] and len(dry["kept"]) == 0
    # 12 characters and the namespace start A and B alike: refused, nothing released.
    proc = ipamctl("release", "--container", "default-3f2a9c01b2c4...", "--yes",
                   data_dir=data_dir, expect=1)
    assert "2 containers in the database match" in proc.stderr
    released = ipamctl("release", "--container", short_c, "--yes", data_dir=data_dir).stdout
    assert ids_in(released) == [short_c]
    assert [cid for _, _, cid, _ in held(data_dir)] == [NERD_B]


def test_no_trunc_prints_whole_ids_in_every_table(add, delete, data_dir):
    add(HEX_A)
    add(HEX_B, ifname="eth1")
    add(HEX_C, network="other")
    table = ipamctl("list", data_dir=data_dir).stdout
    assert ids_in(table) == [HEX_A[:13] + "...", HEX_B[:13] + "...", HEX_C[:12] + "..."]
    assert ids_in(ipamctl("list", "--no-trunc", data_dir=data_dir).stdout) == [HEX_A, HEX_B, HEX_C]
    assert ids_in(ipamctl("history", "--no-trunc", data_dir=data_dir).stdout) == [
        HEX_A, HEX_B, HEX_C]
    dry = ipamctl("gc", "--valid", HEX_A, "--grace", "0", "--no-trunc", data_dir=data_dir).stdout
    assert ids_in(dry) == [HEX_B, HEX_C]
    assert ids_in(ipamctl("release", "--container", HEX_B, "--no-trunc", "--dry-run",
                          data_dir=data_dir).stdout) == [HEX_B]
    assert ids_in(ipamctl("release", "--container", HEX_B, "--yes", "--no-trunc",
                          data_dir=data_dir).stdout) == [HEX_B]
    forgot = ipamctl("network", "forget", "other", "--release", "--yes", "--no-trunc",
                     data_dir=data_dir).stdout
    assert ids_in(forgot.split("\nremoved ")[0]) == [HEX_C]
    # JSON has them whole either way.
    assert [x["container_id"] for x in js(data_dir, "list")] == [HEX_A]


def test_gc_says_when_its_list_holds_only_short_ids(add, data_dir):
    add(HEX_A)
    add(HEX_C)
    short = "%s\n%s\n" % (HEX_A[:12], HEX_C[:12])  # podman ps -a -q, without --no-trunc
    proc = ipamctl("gc", "--valid-file", "-", "--grace", "0", data_dir=data_dir, input=short)
    hint = ("note: every ID in the list has 12 characters and none is an ID the database "
            "knows: a runtime's short IDs? gc needs them whole")
    assert hint in proc.stderr and "'podman ps -a -q --no-trunc'" in proc.stderr
    proc = ipamctl("-o", "json", "gc", "--valid-file", "-", "--grace", "0", "--apply",
                   data_dir=data_dir, input=short, expect=1)  # no-match: refused
    assert hint in proc.stderr and json.loads(proc.stdout)["released"] == []
    assert len(held(data_dir)) == 2
    # On a terminal the note comes before the question it explains, and once.
    status, out = on_terminal(data_dir, "gc", "--valid", HEX_A[:12], "--valid", HEX_C[:12],
                              "--grace", "0", "--apply", answer=b"n", prompt=b"anyway?")
    assert status == 1 and out.count("note: every ID") == 1, out
    assert out.index("note: every ID") < out.index("anyway? [y/N]"), out
    assert len(held(data_dir)) == 2
    # Whole IDs, marked starts, or a container whose whole ID has 12 characters: no note.
    for listed in ("%s\n%s\n" % (HEX_A, HEX_C), "%s...\n%s...\n" % (HEX_A[:12], HEX_C[:12])):
        proc = ipamctl("gc", "--valid-file", "-", "--grace", "0", data_dir=data_dir, input=listed)
        assert "note:" not in proc.stderr, listed
    add("web-12-chars")
    proc = ipamctl("gc", "--valid", "web-12-chars", "--valid", HEX_A[:12], "--grace", "0",
                   data_dir=data_dir)
    assert "note:" not in proc.stderr
