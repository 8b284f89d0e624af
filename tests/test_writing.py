"""specbound.writing: every kind of target (file, symlink, '-', character device, FIFO, mount
point, read-only and full filesystems), modes under a umask, the report folder's all-or-nothing
commit, stale staging entries, and pool workers that die with their parent (kill -9)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from specbound import writing
from specbound.writing import WriteError

SRC = str(Path(writing.__file__).resolve().parents[1])


def _no_staging(folder: Path) -> None:
    left = [p for p in folder.rglob(".specbound-*")]
    assert not left, left


# --------------------------------------------------------------------------- kinds of target


def test_regular_file_replaced_atomically_and_new_folders_made(tmp_path):
    target = tmp_path / "a" / "b" / "x.json"
    writing.write_json(target, {"v": 1})
    assert json.loads(target.read_text()) == {"v": 1}
    writing.write_text(target, "second")
    assert target.read_text() == "second"
    _no_staging(tmp_path)


def test_symlink_target_written_and_link_kept(tmp_path):
    real = tmp_path / "real" / "doc.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(Path("real") / "doc.json")  # a relative link, as users make them
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    writing.write_json(chain, {"new": True})
    assert link.is_symlink() and chain.is_symlink()
    assert os.readlink(link) == str(Path("real") / "doc.json")
    assert json.loads(real.read_text()) == {"new": True}
    _no_staging(tmp_path)


def test_dash_is_stdout(capfd):
    assert writing.write_json("-", {"a": [1, 2]}) is None
    assert json.loads(capfd.readouterr().out) == {"a": [1, 2]}


def test_fifo_written_directly_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    writing.write_text(fifo, "through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert writing.target_kind(fifo) == "stream"


def test_character_device_written_directly_not_replaced(tmp_path):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    except PermissionError as e:
        pytest.skip(f"mknod of a character device is not permitted here ({e})")
    writing.write_text(dev, "discarded")
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    writing.check_file_target(dev, "--json")


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_file_descriptor_paths_are_streams(path):
    assert writing.target_kind(path) == "stream"


def test_dev_fd_of_a_regular_file_is_written_not_replaced(tmp_path):
    f = tmp_path / "held.txt"
    with open(f, "w") as fh:
        path = f"/dev/fd/{fh.fileno()}"
        assert writing.target_kind(path) == "stream"
        writing.write_text(path, "via fd")
        ino = os.fstat(fh.fileno()).st_ino
    assert f.read_text() == "via fd" and f.stat().st_ino == ino  # the same file, not a new one


def test_folder_where_a_file_must_go(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(WriteError, match=r"--json .*d: cannot write \(a folder is there"):
        writing.check_file_target(tmp_path / "d", "--json")
    with pytest.raises(WriteError, match="a folder is there"):
        writing.write_text(tmp_path / "d", "x")


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(WriteError, match=r"is not a folder"):
        writing.check_file_target(tmp_path / "f" / "x.json", "--json")
    with pytest.raises(WriteError, match=r"--out .*exists and is not a folder"):
        writing.check_folder_target(tmp_path / "f", "--out")


def _umask_mode(tmp_path: Path, umask: int) -> int:
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {SRC!r})
        os.umask({umask})
        from specbound import writing
        writing.write_text({str(tmp_path / "new.txt")!r}, "a")
        os.makedirs({str(tmp_path / "old")!r}, exist_ok=True)
        writing.write_text({str(tmp_path / "old" / "over.txt")!r}, "b")
        with writing.report_folder({str(tmp_path / "rep")!r}) as st:
            (st.path / "r.json").write_text("c")
        print(os.stat({str(tmp_path / "new.txt")!r}).st_mode & 0o777,
              os.stat({str(tmp_path / "old" / "over.txt")!r}).st_mode & 0o777,
              os.stat({str(tmp_path / "rep" / "r.json")!r}).st_mode & 0o777)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_respect_the_umask(tmp_path, umask):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "over.txt").write_text("")
    os.chmod(tmp_path / "old" / "over.txt", 0o600)
    assert _umask_mode(tmp_path, umask) == [0o666 & ~umask] * 3


# --------------------------------------------------------------------------- the report folder


def _old_report(out: Path) -> None:
    out.mkdir()
    for n in ("report.json", "bounds.csv", "matrices.csv"):
        (out / n).write_text(f"old {n}")


def test_report_folder_commits_all_and_removes_stale(tmp_path):
    out = tmp_path / "rep"
    _old_report(out)
    (out / "p_star.png").write_bytes(b"old plot")
    (out / "mine.txt").write_text("user file")
    with writing.report_folder(out, remove=["p_star.png"]) as st:
        for n in ("report.json", "bounds.csv", "matrices.csv"):
            (st.path / n).write_text(f"new {n}")
    assert {p.name for p in st.written} == {"report.json", "bounds.csv", "matrices.csv"}
    assert all((out / n).read_text() == f"new {n}" for n in ("report.json", "bounds.csv", "matrices.csv"))
    assert not (out / "p_star.png").exists() and (out / "mine.txt").read_text() == "user file"
    _no_staging(tmp_path)


def test_folder_in_the_way_is_an_error_before_anything_is_replaced(tmp_path):
    out = tmp_path / "rep"
    _old_report(out)
    (out / "matrices.csv").unlink()
    (out / "matrices.csv").mkdir()
    with pytest.raises(WriteError, match=r"matrices\.csv is a folder where the file matrices\.csv must go"):
        writing.check_folder_target(out, "--out", ["report.json", "matrices.csv"])
    with pytest.raises(WriteError, match="matrices.csv"):
        with writing.report_folder(out) as st:
            for n in ("report.json", "bounds.csv", "matrices.csv"):
                (st.path / n).write_text(f"new {n}")
    assert (out / "report.json").read_text() == "old report.json"
    assert (out / "bounds.csv").read_text() == "old bounds.csv"
    _no_staging(tmp_path)


def test_failed_rename_puts_the_old_files_back(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    _old_report(out)
    real = os.replace
    calls = {"n": 0}

    def flaky(a, b):
        calls["n"] += 1
        if calls["n"] == 4:  # after report.json... the second new file is about to go in
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(writing.os, "replace", flaky)
    with pytest.raises(WriteError, match="no space left on device"):
        with writing.report_folder(out) as st:
            for n in ("report.json", "bounds.csv", "matrices.csv"):
                (st.path / n).write_text(f"new {n}")
    monkeypatch.setattr(writing.os, "replace", real)
    assert {n: (out / n).read_text() for n in ("report.json", "bounds.csv", "matrices.csv")} == {
        n: f"old {n}" for n in ("report.json", "bounds.csv", "matrices.csv")}
    _no_staging(tmp_path)


def test_error_or_interrupt_inside_removes_the_folder_it_created(tmp_path):
    out = tmp_path / "new" / "rep"
    with pytest.raises(KeyboardInterrupt):
        with writing.report_folder(out) as st:
            (st.path / "report.json").write_text("half")
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()


def test_stale_staging_removed_by_dead_pid_and_age(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".specbound-{dead.pid}-abcdef"
    gone.mkdir()
    (gone / "report.json").write_text("x")
    gone_file = tmp_path / f".specbound-{dead.pid}-0123.tmp"
    gone_file.write_text("x")
    live = tmp_path / f".specbound-{os.getpid()}-beef"
    live.mkdir()
    legacy_old = tmp_path / ".specbound-k2j3h4"
    legacy_old.mkdir()
    legacy_new = tmp_path / ".specbound-q9w8e7"
    legacy_new.mkdir()
    old = time.time() - 2 * writing.LEGACY_AGE_S
    os.utime(legacy_old, (old, old))
    other = tmp_path / ".specboundish"
    other.mkdir()
    assert writing.clean_stale(tmp_path) == [legacy_old]  # a dead pid's fresh entry may be another namespace's
    minute = time.time() - 2 * writing.DEAD_PID_AGE_S
    for p in (gone, gone_file):
        os.utime(p, (minute, minute))
    removed = writing.clean_stale(tmp_path)
    assert set(removed) == {gone, gone_file}
    assert live.exists() and legacy_new.exists() and other.exists()
    # pid reuse: a live pid's entry older than a day goes too
    ancient = time.time() - 2 * writing.STALE_AGE_S
    os.utime(live, (ancient, ancient))
    assert writing.clean_stale(tmp_path) == [live]


def test_a_killed_runs_staging_is_removed_by_the_next_report(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = out / f".specbound-{dead.pid}-aa11"
    left.mkdir()
    (left / "report.json").write_bytes(b"x" * 1000)
    legacy = tmp_path / ".specbound-oldrun"  # older releases staged beside the folder
    legacy.mkdir()
    old = time.time() - 2 * writing.LEGACY_AGE_S
    for p in (left, legacy):
        os.utime(p, (old, old))
    with writing.report_folder(out) as st:
        (st.path / "report.json").write_text("new")
    assert not left.exists() and not legacy.exists()


def test_a_worker_killed_mid_task_is_reported_as_killed_with_the_settings():
    """What an E3 worker ended by the OOM killer looks like (SIGKILL): not a bare BrokenProcessPool."""
    from specbound.parallel import WorkerDied, map_tasks

    res = list(map_tasks(signal.raise_signal, [(signal.SIGKILL,), (signal.SIGKILL,)], jobs=2))  # the worker itself
    died = [e for _, _, e in res if e is not None]
    assert died and all(isinstance(e, WorkerDied) for e in died)
    msg = str(died[0])
    assert "killed" in msg and "out of memory" in msg and "--jobs 2" in msg and "\n" not in msg


# --------------------------------------------------------------------------- filesystems (mount)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount tmpfs folders (``mount(opts) -> Path``); skipped where mount is not permitted."""
    mounted: list[Path] = []

    def mount(opts: str) -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_mount_point_as_report_folder(tmpfs):
    mnt = tmpfs("size=4m")
    (mnt / "report.json").write_text("old")
    assert os.path.ismount(mnt)
    writing.check_folder_target(mnt, "--out", ["report.json"])
    with writing.report_folder(mnt) as st:
        (st.path / "report.json").write_text("new")
        (st.path / "bounds.csv").write_text("b")
    assert (mnt / "report.json").read_text() == "new" and (mnt / "bounds.csv").read_text() == "b"
    assert os.path.ismount(mnt)
    _no_staging(mnt)


def test_read_only_filesystem_is_one_line_before_any_work(tmpfs):
    ro = tmpfs("ro,size=1m")
    for check, arg in ((writing.check_folder_target, ro / "rep"), (writing.check_folder_target, ro),
                       (writing.check_file_target, ro / "x.json")):
        with pytest.raises(WriteError, match="read-only file system") as e:
            check(arg, "--out")
        assert "\n" not in str(e.value)
    with pytest.raises(WriteError, match=r"x\.json: cannot write \(read-only file system\)"):
        writing.write_text(ro / "x.json", "x", "--json")


def test_full_filesystem_is_one_line_and_leaves_nothing(tmpfs):
    full = tmpfs("size=64k")
    with pytest.raises(WriteError, match="no space left on device"):
        writing.write_bytes(full / "big.bin", b"\0" * (1 << 20), "--json")
    assert not (full / "big.bin").exists()
    with pytest.raises(WriteError, match="no space left on device"):
        with writing.report_folder(full / "rep") as st:
            (st.path / "report.json").write_bytes(b"\0" * (1 << 20))
    assert list(full.iterdir()) == []


# --------------------------------------------------------------------------- orphaned workers


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_pool_workers_exit_when_the_parent_is_killed():
    """kill -9 of a process running map_tasks on a spawn pool (what `analyze ... --jobs 2` and
    `experiment correlation` use): the workers notice their parent is gone and exit."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from specbound.parallel import map_tasks
        for _ in map_tasks(time.sleep, [(60,), (60,), (60,)], jobs=2):
            pass
    """)
    # stderr: the dead parent's resource tracker warns about the pool's semaphores it cleans up
    parent = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # the pool's two workers (the resource tracker may be a child too: it has no specbound thread)
            workers = [c for c in _children(parent.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, _children(parent.pid)
        time.sleep(0.5)  # the workers have run their initializer (the watch thread) by now
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), [w for w in workers if _alive(w)]
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers:  # a failed run of this test must not leave them behind either
            if _alive(w):
                os.kill(w, signal.SIGKILL)
