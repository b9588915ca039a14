"""The `eqrnn` command line: `eqrnn bench` end to end on a tiny size.

No timing is asserted: the machine may be shared. What is checked is the JSON report's
structure, that every implementation computed the same loss and input gradient as
eqrnn (the cross-check that they are measuring the same computation), that the
command is reachable as `python -m eqrnn`, and that a peer that cannot be imported
is skipped with a note.
"""

import json
import math
import subprocess
import sys

import pytest

from eqrnn._cli import main


TINY = "8,2,3,4"  # T, B, I, H
EXPECTED = {
    "lstm": {"eqrnn", "torch", "flax LSTMCell", "flax OptimizedLSTMCell", "equinox"},
    "gru": {"eqrnn", "torch", "flax GRUCell", "equinox"},
}


def _assert_pass_entry(entry: dict, implementation: str, reps: int) -> None:
    times = entry["times_ms"]
    assert len(times) == reps and all(t > 0 for t in times), implementation
    assert entry["min_ms"] == min(times)
    assert min(times) <= entry["median_ms"] <= max(times)
    compile_info = entry["compile"]
    if implementation == "torch":
        assert compile_info["seconds"] is None
    else:
        assert compile_info["seconds"] > 0
        assert "lower" in compile_info["method"]
    memory = entry["memory"]
    assert memory["method"]
    if memory["peak_bytes"] is None:  # allowed only with the reason given
        assert memory["method"].startswith("n/a"), (implementation, memory)
    else:
        assert isinstance(memory["peak_bytes"], int) and memory["peak_bytes"] > 0
    if implementation != "torch":
        # JAX: XLA's buffer plan, always available on CPU.
        assert memory["peak_bytes"] == (
            memory["temp_bytes"] + memory["argument_bytes"] + memory["output_bytes"]
        )


def test_bench_json_and_every_peer_computes_eqrnns_loss(tmp_path, capsys):
    path = tmp_path / "b.json"
    argv = ["bench", "--size", TINY, "--reps", "2", "--warmup", "1"]
    argv += ["--cells", "lstm", "gru", "--peers", "torch", "flax", "equinox"]
    argv += ["--json", str(path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())

    assert report["command"] == ["eqrnn", *argv]
    machine = report["machine"]
    for key in ("platform", "cpu_count", "date", "jax_cores", "torch_num_threads"):
        assert machine[key], key
    for package in ("jax", "torch", "flax", "equinox", "eqrnn"):
        assert machine["versions"][package], package
    assert machine["torch_num_threads"] == machine["jax_cores"]
    assert report["skipped_peers"] == {}
    assert report["settings"]["reps"] == 2
    assert report["settings"]["sizes"] == [
        {"name": "custom", "T": 8, "B": 2, "I": 3, "H": 4}
    ]

    for cell, names in EXPECTED.items():
        records = {
            r["implementation"]: r for r in report["results"] if r["cell"] == cell
        }
        assert set(records) == names
        reference = records["eqrnn"]
        assert math.isfinite(reference["loss"]) and reference["loss"] != 0
        for name, record in records.items():
            assert record["size"]["T"] == 8
            # The same function of the same weights, in float32.
            assert record["loss"] == pytest.approx(reference["loss"], rel=1e-4), name
            assert record["fwd_bwd"]["first_loss"] == pytest.approx(
                reference["loss"], rel=1e-4
            ), name
            assert record["grad_inputs_norm"] == pytest.approx(
                reference["grad_inputs_norm"], rel=1e-4
            ), name
            for pass_ in ("fwd", "fwd_bwd"):
                _assert_pass_entry(record[pass_], name, reps=2)
                for stat in ("median", "min"):
                    ratio = record[pass_][f"{stat}_ratio_to_torch"]
                    torch_ms = records["torch"][pass_][f"{stat}_ms"]
                    expected = record[pass_][f"{stat}_ms"] / torch_ms
                    assert ratio == pytest.approx(expected)
            if name == "torch":
                assert record["fwd"]["median_ratio_to_torch"] == 1.0

        for name in names:
            assert f"\n{name} " in printed, name
    assert printed.count("eqrnn speedup vs Flax") == 2


def test_checkpoint_study_reports_time_and_memory_ratios(tmp_path, capsys):
    path = tmp_path / "study.json"
    argv = ["bench", "--checkpoint-study", "--size", "16,2,3,4", "--reps", "1"]
    assert main([*argv, "--warmup", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["settings"]["peers"] == []  # eqrnn alone: nothing imported
    study = report["checkpoint_study"]
    names = [r["implementation"] for r in study["results"]]
    assert names == ["checkpoint=False", "checkpoint=True"]
    plain, ckpt = (r["fwd_bwd"] for r in study["results"])
    assert study["temp_bytes_ratio"] == pytest.approx(
        ckpt["memory"]["temp_bytes"] / plain["memory"]["temp_bytes"]
    )
    assert study["time_ratio_median"] > 0
    assert study["loss_rel_diff"] < 1e-5
    assert "checkpoint=True / checkpoint=False" in printed


@pytest.mark.parametrize(
    "peer, modules", [("flax", ["flax", "flax.nnx"]), ("torch", ["torch"])]
)
def test_peer_that_fails_to_import_is_skipped_with_a_note(
    peer, modules, monkeypatch, tmp_path, capsys
):
    for module in modules:
        # `import` raises ImportError for a module whose sys.modules entry is None.
        monkeypatch.setitem(sys.modules, module, None)
    path = tmp_path / "b.json"
    argv = ["bench", "--size", "4,2,3,4", "--reps", "1", "--warmup", "1"]
    argv += ["--cells", "gru", "--mode", "fwd", "--peers", peer, "equinox"]
    assert main([*argv, "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert f"note: skipping {peer}" in printed
    assert set(report["skipped_peers"]) == {peer}
    assert peer in report["skipped_peers"][peer]  # the ImportError, for the record
    assert {r["implementation"] for r in report["results"]} == {"eqrnn", "equinox"}
    if peer == "torch":
        assert report["machine"]["torch_num_threads"] is None
        assert all(r["fwd"]["median_ratio_to_torch"] is None for r in report["results"])
        assert "n/a" in printed


@pytest.mark.parametrize(
    "argv",
    [
        ["--size", "8,2,3"],
        ["--size", "8,2,3,0"],
        ["--checkpoint-study", "--sizes", "small"],
    ],
)
def test_bad_size_is_rejected_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", *argv])
    assert info.value.code == 2
    assert "T,B,I,H" in capsys.readouterr().err


def test_python_m_eqrnn_bench_help_exits_0():
    done = subprocess.run(
        [sys.executable, "-m", "eqrnn", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--cells", "--sizes", "--size", "--peers", "--reps", "--json"):
        assert option in done.stdout
    assert "--checkpoint-study" in done.stdout
