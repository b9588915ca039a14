"""`benchmarks/bench.py` end to end on a tiny size, in this process (imported from
its path) and as `python benchmarks/bench.py`.

No timing is asserted: the machine may be shared. What is checked is the JSON report's
structure, that every implementation computed the same loss and input gradient as
eqrnn (the cross-check that they are measuring the same computation), that the
script runs from the repository root and from elsewhere, and that a peer that cannot
be imported is skipped with a note.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
main = bench.main
# bench.py imports its harness from its own folder, `benchmarks/_harness.py`.
allocator_environment = sys.modules["_harness"].allocator_environment


TINY = "8,2,3,4"  # T, B, I, H
EXPECTED = {
    "lstm": {
        "eqrnn",
        "eqrnn generic step",
        "torch",
        "flax LSTMCell",
        "flax OptimizedLSTMCell",
        "equinox",
    },
    "gru": {"eqrnn", "eqrnn generic step", "torch", "flax GRUCell", "equinox"},
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


@pytest.fixture
def default_allocator(monkeypatch):
    """No allocator setting in the environment (bench.py records and prints them);
    yields `monkeypatch` to set some."""
    for name in allocator_environment():
        monkeypatch.delenv(name)
    return monkeypatch


def test_bench_json_and_every_peer_computes_eqrnns_loss(
    tmp_path, capsys, default_allocator
):
    path = tmp_path / "b.json"
    default_allocator.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    argv = ["--size", TINY, "--reps", "2", "--warmup", "1"]
    argv += ["--cells", "lstm", "gru", "--peers", "torch", "flax", "equinox"]
    argv += ["--json", str(path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())

    assert report["command"] == [sys.executable, str(BENCH), *argv]
    machine = report["machine"]
    for key in ("platform", "cpu_count", "date", "jax_cores", "torch_num_threads"):
        assert machine[key], key
    for package in ("jax", "torch", "flax", "equinox", "eqrnn"):
        assert machine["versions"][package], package
    assert machine["torch_num_threads"] == machine["jax_cores"]
    assert machine["allocator_env"] == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert "\nmemory allocator: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (" in printed
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
    assert printed.count("eqrnn fused step vs generic step") == 2


def test_checkpoint_study_reports_time_and_memory_ratios(
    tmp_path, capsys, default_allocator
):
    path = tmp_path / "study.json"
    argv = ["--checkpoint-study", "--size", "16,2,3,4", "--reps", "1"]
    assert main([*argv, "--warmup", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["machine"]["allocator_env"] == {}
    assert "\nmemory allocator: the C library's defaults (" in printed
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


def _finite_positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _assert_jax_memory(memory: dict) -> None:
    assert isinstance(memory["peak_bytes"], int) and memory["peak_bytes"] > 0
    assert memory["peak_bytes"] == (
        memory["temp_bytes"] + memory["argument_bytes"] + memory["output_bytes"]
    )


def test_parallel_study_reports_every_cell_and_mode_against_gru(tmp_path, capsys):
    path = tmp_path / "parallel.json"
    argv = ["--parallel-study", "--lengths", "8", "16", "--reps", "1"]
    argv += ["--cells", "gru", "mingru", "--scan-modes", "associative"]
    argv += ["newton-diagonal", "--batch-size", "2", "--hidden-size", "4"]
    assert main([*argv, "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["settings"]["peers"] == []  # eqrnn alone
    study = report["parallel_study"]
    assert study["lengths"] == [8, 16]
    assert (study["batch"], study["input_size"], study["hidden_size"]) == (2, 4, 4)
    results = study["results"]
    # The step-by-step GRU by default and by Newton's method; MinGRU in the
    # linear-scan mode.
    expected = [
        ("GRUCell", None),
        ("GRUCell", "newton-diagonal"),
        ("MinGRU", "associative"),
    ]
    assert [(r["cell"], r["mode"], r["T"]) for r in results] == [
        (cell, mode, t) for t in (8, 16) for cell, mode in expected
    ]
    for t in (8, 16):
        records = [r for r in results if r["T"] == t]
        gru = records[0]
        for r in records:
            assert r["size"] == {"T": t, "B": 2, "I": 4, "H": 4}
            assert r["finite"] is True
            for key in ("loss", "grad_inputs_norm", "grad_params_norm"):
                assert math.isfinite(r[key]), key
            assert r["grad_inputs_norm"] > 0 and r["grad_params_norm"] > 0
            for pass_ in ("fwd", "fwd_bwd"):
                e = r[pass_]
                _assert_pass_entry(e, r["implementation"], reps=1)
                _assert_jax_memory(e["memory"])
                assert e["tokens_per_s"] == pytest.approx(
                    2 * t / (e["median_ms"] / 1e3)
                )
                for key in ("tokens_per_s_best", "speedup_vs_gru_median"):
                    assert _finite_positive(e[key]), key
                assert e["speedup_vs_gru_min"] == pytest.approx(
                    gru[pass_]["min_ms"] / e["min_ms"]
                )
        assert gru["fwd_bwd"]["speedup_vs_gru_median"] == 1.0
        assert f"== T={t} (B=2 I=4 H=4)" in printed
    assert set(study["mingru_fwd_bwd_speedup"]) == {"8", "16"}
    assert "\nMinGRU   associative " in printed
    assert "\nGRUCell  newton-diagonal " in printed
    assert "MinGRU fwd+bwd speedup over GRUCell" in printed


def test_parallel_study_without_the_baseline_and_forward_only(tmp_path, capsys):
    path = tmp_path / "parallel.json"
    argv = ["--parallel-study", "--lengths", "8", "--reps", "1"]
    argv += ["--cells", "lru", "rglru", "--scan-modes", "chunked", "--mode", "fwd"]
    argv += ["--hidden-size", "4", "--batch-size", "2", "--json", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    records = json.loads(path.read_text())["parallel_study"]["results"]
    assert [(r["cell"], r["mode"]) for r in records] == [
        ("LRU", "chunked"),
        ("RGLRU", "chunked"),
    ]
    for record in records:
        assert "fwd_bwd" not in record and record["finite"] is True
        assert record["fwd"]["speedup_vs_gru_median"] is None
        assert _finite_positive(record["fwd"]["tokens_per_s"])
        _assert_jax_memory(record["fwd"]["memory"])


def _assert_long_result(r: dict, t: int, reps: int) -> None:
    assert r["T"] == t and (r["batch"], r["hidden_size"]) == (1, 4)
    assert "error" not in r and "skipped" not in r, r
    assert r["finite"] is True
    for key in ("loss", "grad_inputs_norm", "grad_params_norm"):
        assert math.isfinite(r[key]), key
    assert len(r["times_ms"]) == reps and all(x > 0 for x in r["times_ms"])
    assert r["min_ms"] == min(r["times_ms"])
    assert _finite_positive(r["tokens_per_s"])
    assert r["compile"]["seconds"] > 0
    _assert_jax_memory(r["memory"])


def test_long_study_runs_each_configuration_in_its_own_process(tmp_path, capsys):
    path = tmp_path / "long.json"
    argv = ["--long-study", "--cells", "gru", "--lengths", "16"]
    argv += ["--reps", "2", "--hidden-size", "4", "--json", str(path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    study = json.loads(path.read_text())["long_study"]
    assert study["process"] == "one subprocess each"
    assert [(r["cell"], r["checkpoint"]) for r in study["results"]] == [
        ("GRUCell", True),
        ("GRUCell", False),
    ]
    for r in study["results"]:
        _assert_long_result(r, 16, reps=2)
        rss = r["rss"]
        # A fresh process: at least the JAX runtime, and far from the parent's.
        assert rss["after_start_bytes"] <= rss["after_compile_bytes"]
        assert rss["after_compile_bytes"] <= rss["peak_bytes"] < 4 * 2**30
        assert rss["peak_bytes"] > 10 * 2**20
    assert "GRUCell  -     16" in printed
    assert "yes|yes" in printed


def test_long_study_in_process_covers_linear_cells_and_the_memory_limit(
    tmp_path, capsys
):
    path = tmp_path / "long.json"
    argv = ["--long-study", "--in-process", "--cells", "simple", "mingru"]
    argv += ["--lengths", "8", "--reps", "1", "--hidden-size", "4"]
    argv += ["--scan-modes", "associative", "--json", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    study = json.loads(path.read_text())["long_study"]
    results = study["results"]
    assert [(r["cell"], r["checkpoint"]) for r in results] == [
        (cell, flag) for cell in ("SimpleCell", "MinGRU") for flag in (True, False)
    ]
    assert [r["mode"] for r in results] == ["auto"] * 2 + ["associative"] * 2
    for r in results:
        _assert_long_result(r, 8, reps=1)
        assert r["rss"]["method"].startswith("n/a")

    # A plan over the limit is compiled, reported and not run.
    argv = ["--long-study", "--in-process", "--cells", "mgu", "--lengths"]
    argv += ["64", "--hidden-size", "4", "--memory-limit-gib", "1e-9"]
    assert main([*argv, "--json", str(path)]) == 0
    assert "not run" in capsys.readouterr().out
    for r in json.loads(path.read_text())["long_study"]["results"]:
        assert "over the" in r["skipped"] and "times_ms" not in r
        assert r["memory"]["peak_bytes"] > 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--parallel-study", "--lengths", "0"], "positive integer"),
        (["--parallel-study", "--lengths", "ten"], "positive integer"),
        (["--parallel-study", "--lengths"], "expected at least one"),
        (["--parallel-study", "--scan-modes", "parallel"], "invalid choice"),
        (["--parallel-study", "--hidden-size", "-4"], "positive integer"),
        (["--parallel-study", "--size", "8,2,3,4"], "not --sizes or --size"),
        (["--parallel-study", "--long-study"], "not allowed with"),
        (["--long-study", "--checkpoint-study"], "not allowed with"),
        (["--long-study", "--memory-limit-gib", "0"], "positive number"),
        (["--long-study", "--memory-limit-gib", "nan"], "positive number"),
        (["--lengths", "16"], "--parallel-study and --long-study only"),
        (["--hidden-size", "16"], "--parallel-study and --long-study only"),
        (["--cells", "mingru"], "the comparison takes --cells among lstm gru"),
        (["--checkpoint-study", "--cells", "lru"], "--checkpoint-study takes"),
        (["--parallel-study", "--in-process"], "--long-study only"),
        (["--memory-limit-gib", "2"], "--long-study only"),
        (["--long-study", "--checkpoint"], "do not apply to --long-study"),
        (["--parallel-study", "--unroll", "2"], "do not apply to --parallel-study"),
    ],
)
def test_bad_study_options_are_rejected_with_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


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
    argv = ["--size", "4,2,3,4", "--reps", "1", "--warmup", "1"]
    argv += ["--cells", "gru", "--mode", "fwd", "--peers", peer, "equinox"]
    assert main([*argv, "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert f"note: skipping {peer}" in printed
    assert set(report["skipped_peers"]) == {peer}
    assert peer in report["skipped_peers"][peer]  # the ImportError, for the record
    assert {r["implementation"] for r in report["results"]} == {
        "eqrnn",
        "eqrnn generic step",
        "equinox",
    }
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
        main(argv)
    assert info.value.code == 2
    assert "T,B,I,H" in capsys.readouterr().err


@pytest.mark.parametrize("from_root", [True, False], ids=["from-root", "elsewhere"])
def test_bench_script_help_exits_0(from_root, tmp_path):
    # As the docs say to run it, from the root; and by its full path from elsewhere.
    script = "benchmarks/bench.py" if from_root else str(BENCH)
    done = subprocess.run(
        [sys.executable, script, "--help"],
        cwd=ROOT if from_root else tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--cells", "--sizes", "--size", "--peers", "--reps", "--json"):
        assert option in done.stdout
    for option in (
        "--checkpoint-study",
        "--parallel-study",
        "--long-study",
        "--lengths",
        "--scan-modes",
        "--hidden-size",
        "--batch-size",
        "--in-process",
        "--memory-limit-gib",
    ):
        assert option in done.stdout, option


def test_bench_script_runs_from_the_root_and_records_its_command(tmp_path):
    path = tmp_path / "study.json"
    argv = ["benchmarks/bench.py", "--checkpoint-study", "--size", "4,1,2,2"]
    argv += ["--reps", "1", "--warmup", "1", "--json", str(path)]
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("benchmarks/bench.py: jax "), done.stdout
    assert "checkpoint=True / checkpoint=False" in done.stdout
    report = json.loads(path.read_text())
    assert report["command"] == [sys.executable, *argv]
    names = [r["implementation"] for r in report["checkpoint_study"]["results"]]
    assert names == ["checkpoint=False", "checkpoint=True"]


def test_allocator_environment_names_only_allocator_settings(default_allocator):
    assert allocator_environment() == {}
    settings = {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=1",
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_TRIM_THRESHOLD_": "0",
        "MALLOC_CONF": "dirty_decay_ms:-1",
        "TCMALLOC_RELEASE_RATE": "0",
        "LD_PRELOAD": "libjemalloc.so.2",
    }
    for name, value in settings.items():
        default_allocator.setenv(name, value)
    default_allocator.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")  # recorded elsewhere
    assert allocator_environment() == settings
