"""Where the commands write (issue 17, the output side): ``--json -`` on stdout with the summary
on stderr, symlinks and FIFOs as ``--json``, a folder in the way of a report file, targets
checked before any work, every ``--device`` checked up front by one helper, Ctrl-C (exit 130,
one line, ``combined.csv`` for what finished), an all-failed multi-source run, and a failed E2
run that leaves no empty ``--out``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from specbound.cli import app

from builders import write_bert

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_line(res, code: int, *needles: str) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_json_dash_is_parseable_stdout_and_the_summary_goes_to_stderr(tiny_bert, tmp_path):
    res = run("analyze", tiny_bert, "--out", tmp_path / "rep", "--no-plots", "--json", "-")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "Analysed" in res.stderr and not (Path.cwd() / "-").exists()


def test_bounds_csv_dash_is_the_catalogue_alone_on_stdout():
    import io

    res = run("bounds", "--csv", "-")
    assert res.exit_code == 0, res.output
    cat = pd.read_csv(io.StringIO(res.stdout))
    assert {"spectrum_adaptive", "edelman"} <= set(cat["name"]) and "Bound families" in res.stderr


def test_two_documents_on_stdout_is_a_usage_error(tiny_bert, tmp_path):
    _one_line(run("analyze", tiny_bert, "--out", tmp_path / "r", "--json", "-", "--csv", "-"), 2, "--json and --csv")
    assert not (tmp_path / "r").exists()


def test_json_symlink_keeps_the_link_and_fills_its_target(tiny_bert, tmp_path):
    (tmp_path / "docs").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "docs" / "run1.json")
    res = run("analyze", tiny_bert, "--out", tmp_path / "rep", "--no-plots", "--json", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink()
    assert json.loads((tmp_path / "docs" / "run1.json").read_text())["schema"] == "specbound.report/1"


def test_json_fifo_is_written_not_replaced(tiny_bert, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    res = run("analyze", tiny_bert, "--out", tmp_path / "rep", "--no-plots", "--json", fifo)
    reader.join(30)
    assert res.exit_code == 0, res.output
    assert json.loads(got[0]) == json.loads((tmp_path / "rep" / "report.json").read_text())
    assert fifo.is_fifo()


def test_folder_where_matrices_csv_belongs_fails_before_the_analysis(tiny_bert, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    assert run("analyze", tiny_bert, "--out", out, "--no-plots").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "matrices.csv").unlink()
    (out / "matrices.csv").mkdir()
    import specbound.analysis

    def no_analysis(*a, **k):
        raise AssertionError("the analysis ran before the output check")

    monkeypatch.setattr(specbound.analysis, "analyze", no_analysis)
    other = write_bert(tmp_path / "other", seed=3)
    _one_line(run("analyze", other, "--out", out, "--no-plots"), 1, "--out", "matrices.csv", "is a folder")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    del before["matrices.csv"]
    assert after == before  # nothing of the new model beside the old report


def test_an_attention_folder_of_an_earlier_run_is_not_in_the_way(tiny_bert, tmp_path):
    out = tmp_path / "rep"
    (out / "attention").mkdir(parents=True)
    (out / "attention" / "heads.csv").write_text("earlier")
    res = run("analyze", tiny_bert, "--out", out, "--no-plots")
    assert res.exit_code == 0, res.output
    assert (out / "attention" / "heads.csv").read_text() == "earlier" and (out / "report.json").is_file()


def test_json_at_a_directory_fails_before_out_is_replaced(tiny_bert, tmp_path):
    (tmp_path / "adir").mkdir()
    _one_line(run("analyze", tiny_bert, "--out", tmp_path / "rep", "--json", tmp_path / "adir"), 1,
              "--json", "a folder is there")
    assert not (tmp_path / "rep").exists()


def test_out_under_a_file_is_one_line(tiny_bert, tmp_path):
    (tmp_path / "f").write_text("")
    _one_line(run("analyze", tiny_bert, "--out", tmp_path / "f" / "rep"), 1, "--out", "is not a folder")
    _one_line(run("analyze", tiny_bert, "--out", tmp_path / "rep", "--csv", tmp_path / "f" / "m.csv"), 1, "--csv")


@pytest.fixture
def ro_tmpfs(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (not root or no CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.parametrize("args", [
    ("analyze", "{m}", "--out", "{ro}/rep"),
    ("analyze", "{m}", "--out", "{t}/rep", "--json", "{ro}/a.json"),
    ("analyze", "{m}", "{m}", "--out", "{ro}/many"),
    ("attention", "{m}", "--out", "{ro}/att"),
    ("compare", "{m}", "{m}", "--out", "{ro}/cmp"),
    ("bounds", "--csv", "{ro}/cat.csv"),
    ("experiment", "scaling", "--quick", "--out", "{ro}/e2"),
    ("experiment", "correlation", "--quick", "--out", "{ro}/e3"),
    ("experiment", "infinite-width", "--quick", "--out", "{ro}/e4"),
])
def test_read_only_targets_are_one_line_before_any_work(tiny_bert, tmp_path, ro_tmpfs, args):
    subs = {"m": str(tiny_bert), "ro": str(ro_tmpfs), "t": str(tmp_path)}
    res = run(*[a.format(**subs) for a in args])
    _one_line(res, 1, "read-only file system")
    assert not (tmp_path / "rep").exists()


def test_mount_point_as_out(tiny_bert, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        res = run("analyze", tiny_bert, "--out", mnt, "--no-plots")
        assert res.exit_code == 0, res.output
        assert json.loads((mnt / "report.json").read_text())["model"]["L"] == 2
        assert os.path.ismount(mnt) and not list(mnt.glob(".specbound-*"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------- --device, every command


@pytest.mark.parametrize("args", [
    ("analyze", "{m}", "--out", "{t}/o"),
    ("analyze", "{m}", "{m}", "--out", "{t}/o"),
    ("attention", "{m}", "--out", "{t}/o"),
    ("compare", "{m}", "{m}", "--out", "{t}/o"),
    ("experiment", "scaling", "--quick", "--out", "{t}/o"),
])
def test_cuda_without_cuda_is_checked_up_front(tiny_bert, tmp_path, monkeypatch, args):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = run(*[a.format(m=tiny_bert, t=tmp_path) for a in args], "--device", "cuda")
    _one_line(res, 1, "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); "
                      "use --device cpu")
    assert not (tmp_path / "o").exists()


def test_cuda_index_past_the_devices(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _one_line(run("analyze", tiny_bert, "--out", tmp_path / "o", "--device", "cuda:3"), 1,
              "--device cuda:3", "only 1 CUDA devices")


# --------------------------------------------------------------------------- several SOURCEs, Ctrl-C


def test_all_sources_failing_lists_them_exit_1_and_no_table(tmp_path):
    res = run("analyze", tmp_path / "nope1", tmp_path / "nope2", "--out", tmp_path / "many", "--no-plots")
    assert res.exit_code == 1, res.output
    assert "Checkpoints" not in res.output and "nope1" in res.stderr and "nope2" in res.stderr
    assert "none of the 2 checkpoints could be analysed" in res.stderr
    assert not (tmp_path / "many" / "combined.csv").exists()


def test_interrupt_in_a_multi_source_run_keeps_what_finished(tmp_path, monkeypatch):
    """Ctrl-C while the second report is being written: combined.csv lists the first, the second's
    folder is gone, exit 130 with one line."""
    a, b, c = (write_bert(tmp_path / n, seed=i) for i, n in enumerate(("a", "b", "c")))
    import specbound.report.io as io

    real_fill, calls = io._fill, {"n": 0}

    def fill(stage, *args, **kw):
        calls["n"] += 1
        real_fill(stage, *args, **kw)
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "_fill", fill)
    out = tmp_path / "many"
    res = run("analyze", a, b, c, "--out", out, "--no-plots")
    assert res.exit_code == 130, res.output
    assert res.stderr.strip() == (f"interrupted; 1 of 3 reports written to {out} (listed in {out / 'combined.csv'}), "
                                  "the others removed")
    assert sorted(p.name for p in out.iterdir()) == ["a", "combined.csv"]
    assert pd.read_csv(out / "combined.csv")["report"].tolist() == ["a"]
    assert not list(out.rglob(".specbound-*"))


def test_interrupt_before_anything_is_written(tiny_bert, tmp_path, monkeypatch):
    import specbound.analysis

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(specbound.analysis, "analyze", interrupted)
    res = run("analyze", tiny_bert, "--out", tmp_path / "rep")
    assert res.exit_code == 130 and res.stderr.strip() == "interrupted; nothing written", res.output
    assert not (tmp_path / "rep").exists()


def test_sigint_to_a_multi_source_run(tmp_path):
    """A real SIGINT to a running `analyze SRC SRC` (subprocess): exit 130, one line, combined.csv
    for the reports that finished, no partial folders or staging entries."""
    small = write_bert(tmp_path / "small", L=1, N=8, H=2, F=8)
    big = write_bert(tmp_path / "big", L=6, N=192, H=6, F=768)
    out = tmp_path / "many"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "specbound", "analyze", str(small), str(big), str(big),
                          "--out", str(out), "--dense"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "small" / "report.json").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the first big model is being analysed
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted; ") and "Traceback" not in stderr, stderr
    done = pd.read_csv(out / "combined.csv")["report"].tolist()
    assert done[0] == "small" and set(done) <= {"small", "big", "big-2"}
    assert sorted(p.name for p in out.iterdir()) == sorted(done + ["combined.csv"])
    assert not list(out.rglob(".specbound-*"))


def test_failed_scaling_run_leaves_no_empty_out(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text(f"source,L,N\n{tmp_path / 'missing'},2,16\n")
    res = run("experiment", "scaling", "--family", grid, "--out", tmp_path / "new" / "e2")
    assert res.exit_code == 1, res.output
    assert not (tmp_path / "new").exists()


def test_main_prints_no_runtime_warning_before_the_error(tiny_bert, tmp_path, monkeypatch, capfd):
    """The script's entry point: a numpy RuntimeWarning raised on the way to an error does not
    print (filtered in the CLI only), and an OSError nobody caught is one line, exit 1."""
    import warnings

    import numpy as np

    import specbound.analysis
    from specbound.cli.application import main
    from specbound.errors import InputError

    def warns_then_fails(*a, **k):
        np.log(np.zeros(1))  # RuntimeWarning: divide by zero encountered in log
        raise InputError("the refusal")

    monkeypatch.setattr(specbound.analysis, "analyze", warns_then_fails)
    monkeypatch.setattr(sys, "argv", ["specbound", "analyze", str(tiny_bert), "--out", str(tmp_path / "o")])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as e:
            main()
    assert e.value.code == 1 and not [w for w in seen if issubclass(w.category, RuntimeWarning)]
    assert capfd.readouterr().err.strip() == "error: the refusal"

    def full(*a, **k):
        raise OSError(28, "No space left on device", "/some/where/x.bin")

    monkeypatch.setattr(specbound.analysis, "analyze", full)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    assert capfd.readouterr().err.strip() == "error: /some/where/x.bin: no space left on device (OSError, errno 28)."


def test_e1_out_on_a_read_only_folder_fails_before_any_training(tmp_path, monkeypatch):
    """E1's --out is checked up front like every other command's: a folder it cannot write
    to is one line, exit 1, before a single run is trained."""
    import os

    import specbound.experiments.sparse_majority as e1

    if os.geteuid() == 0:
        # root writes through mode bits: make the folder unwritable by putting a file where
        # one of E1's outputs must go instead.
        out = tmp_path / "e1"
        (out / "runs.csv").mkdir(parents=True)
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    monkeypatch.setattr(e1, "run_study", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    from typer.testing import CliRunner

    from specbound.cli import app

    res = CliRunner().invoke(app, ["experiment", "sparse-majority", "--quick", "--lengths", "16,32",
                                   "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "--out" in res.output and len(res.output.strip().splitlines()) == 1


def test_plots_are_written_through_the_atomic_writer(tmp_path):
    """save_figure renders in memory and writes like every other file: a symlinked plot path
    keeps its link and its target gets a valid PNG with the umask's mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specbound.writing import save_figure

    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "plot.png"
    link.symlink_to(target)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, link, dpi=50)
    plt.close(fig)
    assert link.is_symlink()
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".specbound-*"))
