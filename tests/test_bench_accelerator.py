"""The device bench (`bench/accelerator.py`) on its CPU dry path: every section runs at toy
sizes and the table names the device; the peaks it divides by are the data sheets'."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench():
    spec = importlib.util.spec_from_file_location("accelerator", os.path.join(ROOT, "bench", "accelerator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_device_kind_gets_its_own_peak_and_bandwidth():
    peaks = bench().peaks
    assert peaks("NVIDIA H100 80GB HBM3") == (989e12, 3.35e12)
    assert peaks("NVIDIA H100 PCIe") == (756e12, 2.0e12)  # not the SXM card's
    assert peaks("NVIDIA H200") == (989e12, 4.8e12)
    assert peaks("TPU v5 lite") == (197e12, 0.82e12) and peaks("TPU v5p") == (459e12, 2.77e12)
    assert peaks("cpu") is None


@pytest.mark.slow  # 50 s: five programs compiled and the tiny RLOO run
def test_the_bench_runs_every_section_on_cpu_and_prints_one_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    figures = bench().main(["--tiny", "--json", str(tmp_path / "bench.json")])
    assert figures["parity"] == {"max_abs_logit_diff": 0.0, "greedy_tokens_equal": True}  # the CPU against itself
    train = figures["train"]
    assert train["model"] == "llama-tiny" and train["step_s_einsum"] > 0 and train["step_s_auto"] > 0
    assert [row["batch"] for row in figures["decode"]] == [1, 4] and all(  # None: a busy machine's noise won
        r["tokens_per_s"] is None or r["tokens_per_s"] > 0 for r in figures["decode"]
    )
    assert figures["rloo"]["iterations"] == 4 and -1 < figures["rloo"]["gold"] < 1
    table = capsys.readouterr().out
    assert "device: cpu (cpu); peak unknown" in table and "| tiny RLOO run, 4 iterations end to end |" in table
    assert json.load(open(tmp_path / "bench.json"))["device"] == "cpu"
