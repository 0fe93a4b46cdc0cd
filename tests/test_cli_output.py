"""What ipamctl's output says happened, as an operator reads it on a pipe: the installed
ipamctl on a pool the installed plugin made (stdout for programs, stderr for people)."""
import json

from helpers import events, held, ipamctl, run_plugin

SUBNET = {"subnet": "10.1.2.0/24"}
TYPO = "warning: no network mynte in the database (known: mynet)\n"


def pool(netconf, *cids):
    conf = netconf(SUBNET)
    for cid in cids:
        assert run_plugin("ADD", conf, container_id=cid).status == 0
    return conf


def test_release_says_released_or_would_release(data_dir, netconf):
    pool(netconf, "a", "b")
    dry = ipamctl("release", "10.1.2.2", "--dry-run", data_dir=data_dir)
    real = ipamctl("release", "10.1.2.2", data_dir=data_dir)
    assert dry.stdout == real.stdout  # the same table: the lease
    assert dry.stderr == "would release 1 lease(s); dry run: nothing changed\n"
    assert real.stderr == "released 1 lease(s)\n"
    # -o json: stdout is the leases and nothing else, as before.
    dry = ipamctl("-o", "json", "release", "10.1.2.3", "--dry-run", data_dir=data_dir)
    real = ipamctl("release", "10.1.2.3", "-o", "json", data_dir=data_dir)
    assert json.loads(dry.stdout) == json.loads(real.stdout)
    assert [r["ip"] for r in json.loads(real.stdout)] == ["10.1.2.3"]
    assert (dry.stderr, real.stderr) == ("would release 1 lease(s); dry run: nothing changed\n",
                                         "released 1 lease(s)\n")


def test_a_refused_gc_apply_says_refused_not_dry_run(data_dir, netconf):
    pool(netconf, "a", "b", "c")
    before = held(data_dir)
    proc = ipamctl("gc", "--valid-file", "-", "--grace", "0", "--apply", data_dir=data_dir,
                   input="", expect=1)
    assert "dry run" not in proc.stderr and "add --apply" not in proc.stderr
    assert proc.stderr.startswith("Error: gc refused, nothing released in any network:\n"
                                  "network mynet: the list of live containers is empty")
    assert "refused: " in proc.stdout  # the guards' verdicts in the report
    assert held(data_dir) == before
    dry = ipamctl("gc", "--valid-file", "-", "--grace", "0", data_dir=data_dir, input="")
    assert dry.stderr == "dry run: --apply would refuse (see guards); nothing released\n"


def test_an_unknown_network_is_a_warning_when_reading(data_dir, netconf):
    pool(netconf, "a")
    for args in (["list"], ["stats"], ["history"]):
        proc = ipamctl(*args, "--network", "mynte", data_dir=data_dir)
        assert proc.stdout == "" and proc.stderr.startswith(TYPO), args
        proc = ipamctl(*args, "--network", "mynte", "-o", "json", data_dir=data_dir)
        assert (json.loads(proc.stdout), proc.stderr) == ([], TYPO), args


def test_an_unknown_network_is_an_error_when_changing(data_dir, netconf, tmp_path):
    pool(netconf, "a")
    (data_dir / "mynet" / "10.1.2.2").unlink()  # a damaged mirror, for export to mend
    before = (held(data_dir), events(data_dir))
    for args in (["release", "10.1.2.2", "--network", "mynte"],
                 ["release", "--container", "a", "--network", "mynte", "--yes"],
                 ["gc", "--valid", "a", "--network", "mynte", "--apply"],
                 ["gc", "--valid", "a", "--network", "mynte"],
                 ["export", "--network", "mynte"],
                 ["export", "--network", "mynte", "--to", str(tmp_path / "copy")],
                 ["network", "forget", "mynte"]):
        proc = ipamctl(*args, data_dir=data_dir, expect=1)
        assert proc.stdout == "", args
        assert proc.stderr.startswith("Error: no network mynte in the database"), args
    assert (held(data_dir), events(data_dir)) == before
    assert not (tmp_path / "copy").exists()


def test_an_empty_result_leaves_stdout_parseable(data_dir, netconf):
    pool(netconf, "a")
    ipamctl("release", "10.1.2.2", data_dir=data_dir)
    for args, empty in ((["list"], "(no leases)"), (["list", "--no-headers"], "(no leases)"),
                        (["history", "--container", "nobody"], "(no events)")):
        proc = ipamctl(*args, data_dir=data_dir)
        assert (proc.stdout, proc.stderr) == ("", empty + "\n"), args
        proc = ipamctl("-o", "json", *args, data_dir=data_dir)
        assert (proc.stdout, proc.stderr) == ("[]\n", ""), args
