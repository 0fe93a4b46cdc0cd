"""``ipamctl check`` for machines and for one network, as operators and their scripts meet
it: the installed ipamctl on a database the plugin wrote, on a terminal where it asks.

- ``-o json``: one object per finding (network, ip, path, kind, what ``--repair`` does),
  the contract docs/ipamctl.md documents;
- ``--network N`` (repeatable): only those networks' mirrors; a name the database does
  not know is an error, never "ok";
- ``--repair`` asks on a terminal before it writes (``--yes`` does not), and repairs
  without asking when no one is at a terminal, as it always did (scripts, timers)."""
import json
import os
import re

from docs_pages import every_page
from helpers import held, ipamctl, on_terminal

FINDING_KEYS = {"network", "ip", "path", "kind", "repair", "repaired", "message"}


def check(data_dir, *args, expect=0):
    return json.loads(ipamctl("-o", "json", "check", *args, data_dir=data_dir,
                              expect=expect).stdout)


def by_path(answer):
    assert all(set(f) == FINDING_KEYS for f in answer["findings"]), answer
    assert answer["problems"] == [f["message"] for f in answer["findings"]]
    return {f["path"]: (f["network"], f["ip"], f["kind"], f["repair"], f["repaired"])
            for f in answer["findings"]}


def test_json_has_one_object_per_finding_saying_what_repair_does(add, data_dir):
    for cid in ("a", "b", "c", "d"):
        add(cid)  # 10.1.2.2 to 10.1.2.5
    net = data_dir / "mynet"
    (net / "10.1.2.2").unlink()  # missing
    (net / "10.1.2.3").write_bytes(b"b\neth0")  # wrong: the same owner, spelled otherwise
    (net / "10.1.2.4").write_bytes(b"intruder\r\neth0")  # conflict
    (net / "10.1.2.5").write_bytes(b"")  # unreadable: names no one
    (net / "10.1.2.9").write_bytes(b"go-made\r\neth0")  # foreign
    (net / ".host-local-sqlite.tmp.10.1.2.77.1.1").write_bytes(b"half")  # temporary
    (net / "last_reserved_ip.5").write_bytes(b"10.1.2.9")  # stale
    answer = json.loads(ipamctl("-o", "json", "check", data_dir=data_dir, expect=1).stdout)
    assert answer["ok"] is False
    p = "%s/" % net
    assert by_path(answer) == {
        p + "10.1.2.2": ("mynet", "10.1.2.2", "missing", "create", False),
        p + "10.1.2.3": ("mynet", "10.1.2.3", "wrong", "rewrite", False),
        p + "10.1.2.4": ("mynet", "10.1.2.4", "conflict", "reassign", False),
        p + "10.1.2.5": ("mynet", "10.1.2.5", "unreadable", None, False),
        p + "10.1.2.9": ("mynet", "10.1.2.9", "foreign", "adopt", False),
        p + ".host-local-sqlite.tmp.10.1.2.77.1.1": ("mynet", None, "temporary", "remove",
                                                      False),
        p + "last_reserved_ip.5": ("mynet", None, "stale", "remove", False)}

    answer = check(data_dir, "--repair", expect=1)  # unreadable is someone else's
    found = by_path(answer)
    assert found[p + "10.1.2.5"] == ("mynet", "10.1.2.5", "unreadable", None, False)
    assert found[p + "10.1.2.2"] == ("mynet", "10.1.2.2", "missing", "create", True)
    assert found[p + "10.1.2.9"] == ("mynet", "10.1.2.9", "adopted", "adopt", True)
    assert sorted(f["kind"] for f in answer["findings"] if f["path"] == p + "10.1.2.4") == [
        "adopted", "reassigned"]
    assert [f["kind"] for f in answer["findings"] if not f["repaired"]] == ["unreadable"]
    (net / "10.1.2.5").write_bytes(b"d\r\neth0")
    assert check(data_dir) == {"ok": True, "problems": [], "findings": []}


def test_network_checks_only_the_networks_named(add, data_dir):
    add("a")
    add("b", network="other")
    add("c", network="third")
    for name in ("mynet", "other", "third"):
        (data_dir / name / "10.1.2.2").unlink()
    assert {f["network"] for f in check(data_dir, expect=1)["findings"]} == {
        "mynet", "other", "third"}
    assert [f["network"] for f in check(data_dir, "--network", "other", expect=1)[
        "findings"]] == ["other"]
    assert [f["network"] for f in check(data_dir, "--network", "third", "--network", "other",
                                        expect=1)["findings"]] == ["other", "third"]
    proc = ipamctl("check", "--network", "nosuch", data_dir=data_dir, expect=1)
    assert proc.stderr == "Error: no network nosuch in the database\n"

    answer = check(data_dir, "--network", "other", "--repair")
    assert [(f["network"], f["repaired"]) for f in answer["findings"]] == [("other", True)]
    assert (data_dir / "other" / "10.1.2.2").exists()
    assert not (data_dir / "mynet" / "10.1.2.2").exists()
    assert not (data_dir / "third" / "10.1.2.2").exists()
    assert [f["network"] for f in check(data_dir, expect=1)["findings"]] == ["mynet", "third"]


def test_repair_asks_on_a_terminal_and_not_in_a_script(add, data_dir):
    add("a")
    add("b")
    net = data_dir / "mynet"
    (net / "10.1.2.2").unlink()

    status, out = on_terminal(data_dir, "check", "--repair", answer=b"n")
    assert status == 1, out
    assert "%s/10.1.2.2: missing" % net in out.split("Repair")[0]  # shown before asking
    assert "Repair 1 of 1 problem(s)? [y/N]" in out
    assert not (net / "10.1.2.2").exists()

    status, out = on_terminal(data_dir, "check", "--repair", answer=b"y")
    assert status == 0, out
    assert "%s/10.1.2.2: missing (repaired)" % net in out
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"

    (net / "10.1.2.2").unlink()
    status, out = on_terminal(data_dir, "check", "--repair", "--yes")
    assert status == 0 and "[y/N]" not in out, out
    assert (net / "10.1.2.2").exists()
    # Nothing to repair: nothing to ask.
    status, out = on_terminal(data_dir, "check", "--repair")
    assert (status, out.strip()) == (0, "ok")

    # No terminal (a timer, a script): it repairs without asking, as before.
    (net / "10.1.2.2").unlink()
    proc = ipamctl("check", "--repair", data_dir=data_dir)
    assert proc.stdout == "%s/10.1.2.2: missing (repaired)\n1 problem(s), repaired\n" % net
    assert held(data_dir)[0][2] == "a" and os.path.exists(net / "10.1.2.2")
    proc = ipamctl("check", "--yes", data_dir=data_dir, expect=2)
    assert "--yes goes with --repair" in proc.stderr


def test_the_docs_document_the_shape():
    """The documented JSON contract (docs/ipamctl.md) names exactly the keys check
    prints."""
    [row] = [line for line in every_page().splitlines() if line.startswith("| `check` | ")]
    top, findings = re.match(r'\| `check` \| `\{(.*), "findings": \[\{(.*?)\}\]\}`', row).groups()
    assert re.findall(r'"(\w+)"', top) == ["ok", "problems"]
    assert set(re.findall(r'"(\w+)"', findings)) == FINDING_KEYS
