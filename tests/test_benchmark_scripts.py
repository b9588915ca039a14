"""The scripts in benchmarks/ that BENCHMARKS.md quotes still run (tiny sizes);
`benchmarks/bench.py` has its own tests, tests/test_bench.py.

Their figures are not checked here (performance claims live in the benchmarks, not
in timed tests); only that they run and print what BENCHMARKS.md shows.
"""

import json
import pathlib
import runpy
import subprocess
import sys

import pytest


BENCHMARKS = pathlib.Path(__file__).parent.parent / "benchmarks"


def test_fused_vs_generic_prints_every_cell_and_pass(monkeypatch, capsys):
    script = BENCHMARKS / "fused_vs_generic.py"
    argv = [str(script), "--size", "4,2,3,4", "--reps", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    cells = ("SimpleCell", "GRUCell", "LSTMCell", "MGUCell")
    assert [row[:2] for row in rows] == [
        [cell, pass_] for cell in cells for pass_ in ("fwd", "fwd+bwd")
    ]
    for row in rows:
        assert row[-2].endswith("x"), row  # the speedup, median then [min]


def test_same_programs_prints_a_hash_per_cell_platform_and_mode():
    argv = [sys.executable, str(BENCHMARKS / "same_programs.py"), "--cells", "MinGRU"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [row[:3] for row in rows] == [
        ["MinGRU", platform, mode]
        for platform in ("cpu", "gpu")
        for mode in ("auto", "sequential")
    ]
    assert all(len(row[3]) == 16 for row in rows), rows


@pytest.mark.parametrize("generic", [False, True])
def test_profile_scan_prints_thunks(generic):
    # In its own process: the profiler is global state.
    argv = [sys.executable, str(BENCHMARKS / "profile_scan.py"), "--size", "4,2,3,4"]
    argv += ["--pass", "fwd_bwd", "--reps", "1", "--top", "5"]
    argv += ["--generic"] if generic else []
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"lstm fwd_bwd ({'generic' if generic else 'fused'} step), T=4 B=2 I=3 H=4"
    )
    assert len(lines) == 6 and all(" ms " in line for line in lines[1:]), lines


def test_allocator_study_runs_each_setting_in_its_own_process(tmp_path):
    path = tmp_path / "allocator.json"
    argv = [sys.executable, str(BENCHMARKS / "allocator_study.py"), "--rounds", "1"]
    argv += ["--reps", "1", "--size", "4,2,3,4", "--cells", "gru"]
    argv += ["--settings", "hugetlb", "--json", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bench.py --cells gru --peers torch --reps 1 --size ")
    assert lines[1] == "  hugetlb: GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
    rows = [line.split() for line in lines[3:]]
    assert [row[:3] for row in rows] == [
        ["gru", "custom", "fwd"],
        ["gru", "custom", "fwd_bwd"],
    ]
    for row in rows:  # eqrnn ms, torch ms, their ratio
        assert float(row[-3]) > 0 and float(row[-2]) > 0 and row[-1].endswith("x")
    # The bench process ran under the setting, and recorded it.
    (report,) = json.loads(path.read_text())["reports"]["hugetlb"]
    assert report["machine"]["allocator_env"]["GLIBC_TUNABLES"] == (
        "glibc.malloc.hugetlb=1"
    )


def test_accelerator_runs_every_row_and_cross_checks_the_losses(tmp_path):
    path = tmp_path / "accelerator.json"
    argv = [sys.executable, str(BENCHMARKS / "accelerator.py"), "--sizes", "tiny"]
    argv += ["--unroll", "2", "--generic", "--cpu-path", "--reps", "1", "--drift"]
    argv += ["--newton", "diagonal"]
    argv += ["--drift-steps", "3,6", "--json", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(path.read_text())
    impls = ["eqrnn", "eqrnn unroll=2", "eqrnn generic step", "eqrnn cpu path"]
    impls += ["eqrnn newton-diagonal"]
    impls += ["torch", "flax", "equinox"]
    assert [(r["cell"], r["impl"]) for r in record["rows"]] == [
        (cell, impl) for cell in ("lstm", "gru") for impl in impls
    ]
    for row in record["rows"]:
        # The same weights and inputs everywhere: the losses agree.
        assert row["loss_rel_diff"] < 1e-5, row
        assert row["fwd_bwd_ms"] > 0 and row["vs_torch"] > 0
    assert [(r["cell"], r["T"]) for r in record["drift"]] == [
        (cell, steps) for cell in ("GRUCell", "LSTMCell") for steps in (3, 6)
    ]
    for row in record["drift"]:
        assert 0 <= row["highest_rel_err"] < 1e-5, row
    assert "LSTM T=12 B=3 I=4 H=5" in result.stdout
