"""The scaling demo: GPT-4's capability law on pass counts, the long-tailed corpus, and the demo end to end
(killed during the target run, then resumed under the same registered prediction)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alignlab.scaling.capability_law import PassCounts, fit_capability_law, geometric_pass_rate, still_improving
from alignlab.scaling.predict import sha256_file


def _synthetic(alpha=3.0, k=0.3, sizes=(1e6, 2e6, 4e6, 8e6, 16e6), seeds=3, problems=80, samples=400, seed=0):
    """Per-problem pass rates exp(-a_i C^-k) with mean a_i = alpha (so -E[log p] = alpha C^-k exactly)."""
    rng = np.random.default_rng(seed)
    a = alpha * rng.uniform(0.5, 1.5, problems)
    a *= alpha / a.mean()
    C = np.repeat(np.asarray(sizes, dtype=float), seeds)
    p = np.exp(-a[:, None] * (C[None, :] / 1e6) ** (-k))
    passes = rng.binomial(samples, p).astype(float)
    return PassCounts(
        problems=[f"p{i}" for i in range(problems)],
        passes=passes,
        samples=np.full_like(passes, samples),
        C=C / 1e6,
        size=np.repeat(np.arange(len(sizes)), seeds),
    ), a


def test_capability_law_recovers_alpha_and_k_and_covers_a_30x_target():
    pc, a = _synthetic()
    target = 30 * pc.C.max()
    law = fit_capability_law(pc, [target], n_boot=200)
    assert law["k"] == pytest.approx(0.3, abs=0.03)
    assert law["alpha"] == pytest.approx(3.0, rel=0.1)
    assert law["k_interval"][0] < 0.3 < law["k_interval"][1]
    assert law["r2"] > 0.99
    truth = math.exp(-np.mean(a * target ** (-0.3)))  # the geometric-mean pass rate at the target
    pred = law["predictions"][0]
    assert pred["lo"] < truth < pred["hi"]
    assert abs(pred["estimate"] - truth) < 0.02


def test_capability_law_keeps_only_problems_every_run_solves():
    pc, _ = _synthetic(problems=20)
    pc.passes[3, 4] = 0  # one run never solved problem 3
    law = fit_capability_law(pc, [1e3], n_boot=5)
    assert "p3" not in law["problems_used"] and len(law["problems_used"]) == 19
    pc.passes[:, 0] = 0
    with pytest.raises(ValueError, match="solved by every fitted run"):
        fit_capability_law(pc, [1e3], n_boot=5)


def test_still_improving_tells_a_rising_capability_from_a_flat_one():
    pc, _ = _synthetic()
    assert still_improving(pc, n_boot=100)["improving"]
    flat = PassCounts(pc.problems, pc.passes.copy(), pc.samples, pc.C, pc.size)
    flat.passes[:, pc.size == 4] = flat.passes[:, pc.size == 3]  # the largest size no better than the one before
    verdict = still_improving(flat, n_boot=100)
    assert not verdict["improving"] and verdict["interval"][1] >= 0


def test_geometric_pass_rate_reports_problems_never_passed():
    assert geometric_pass_rate(np.array([4.0, 1.0]), np.array([8.0, 8.0])) == (pytest.approx(math.sqrt(0.5 * 0.125)), 0)
    assert geometric_pass_rate(np.array([4.0, 0.0]), np.array([8.0, 8.0])) == (0.0, 1)


def test_long_tailed_corpus_mentions_head_entities_far_more_than_tail(smoke_pipeline_run, tmp_path):
    import datasets

    from alignlab.scaling.corpus import tail_entities, write_corpus

    out = tmp_path / "corpus"
    write_corpus(smoke_pipeline_run / "world", out, 300_000, zipf=1.0, seed=0)
    ranks = json.loads((out / "entity_ranks.json").read_text())["most_to_least_mentioned"]
    text = " ".join(datasets.load_from_disk(str(out))["train"]["text"])
    head = sum(text.count(f"{n} ") for n in ranks[:3])
    tail = sum(text.count(f"{n} ") for n in ranks[-3:])
    assert head > 5 * tail  # 1/rank: the top 3 against the bottom 3 of ~40 entities is >10x in expectation
    assert set(tail_entities(out, 0.5)) == set(ranks[len(ranks) // 2 :])
    again = write_corpus(smoke_pipeline_run / "world", out, 300_000, zipf=1.0, seed=0)  # reused, not rewritten
    assert again["chars"] == 300_000
    with pytest.raises(ValueError, match="holds another corpus"):
        write_corpus(smoke_pipeline_run / "world", out, 300_000, zipf=0.5, seed=0)


def _demo_args(run: Path, out: Path) -> list[str]:
    world, tok = str(run / "world"), str(run / "tokenizer")
    return ["scaling", "demo", "--preset", "smoke", "--world", world, "--tokenizer", tok, "--output_dir", str(out)]


@pytest.fixture(scope="module")
def killed_then_resumed_demo(smoke_pipeline_run, tmp_path_factory):
    """The smoke demo SIGKILLed once the target run has started, then run again to the end."""
    from alignlab import cli

    out = tmp_path_factory.mktemp("scaling_demo") / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "alignlab.cli", *_demo_args(smoke_pipeline_run, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = out / "target" / "metrics.jsonl"
    deadline = time.time() + 300
    while not started.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    pre = (out / "prediction_pre.json").read_bytes()
    assert cli.main(_demo_args(smoke_pipeline_run, out)) == 0
    return {"out": out, "killed": killed, "pre_before": pre}


def test_killed_demo_resumes_under_the_prediction_it_registered(killed_then_resumed_demo):
    d = killed_then_resumed_demo
    out = d["out"]
    assert d["killed"], "the demo finished before it could be killed in the target run"
    assert (out / "prediction_pre.json").read_bytes() == d["pre_before"]  # never rewritten
    import yaml

    config = yaml.safe_load((out / "target" / "config.yaml").read_text())
    assert config["prediction_sha256"] == sha256_file(out / "prediction_pre.json")
    assert (out / "report.md").is_file() and (out / "predictions.png").is_file() and (out / "calibration.png").is_file()


def test_demo_registers_every_prediction_before_its_run_and_checks_it(killed_then_resumed_demo):
    out = killed_then_resumed_demo["out"]
    results = json.loads((out / "results.json").read_text())
    pre = json.loads((out / "prediction_pre.json").read_text())
    # the target follows the allocation, with every parameter counted (the smoke preset: 1 token each),
    # and is far past the fitted runs
    t = pre["target"]
    assert t["tokens"] == pytest.approx(1.0 * t["N"], rel=0.05)
    for run in results["runs"]:
        assert run["N"] == run["N_total"] > run["N_non_embedding"]
        assert run["C"] == pytest.approx(6.0 * run["N_total"] * run["D"])
    assert results["headline"]["ratio_to_largest_fitted"] == pytest.approx(t["C"] / pre["largest_fitted"])
    # the loss laws saw only the 3 smallest sizes; the capability law the 3 largest (w20 too)
    assert pre["loss_widths"] == [8, 12, 16] and pre["capability_widths"] == [12, 16, 20]
    main_line = [r for r in results["runs"] if not r["name"].startswith(("target", "w8_x", "w12_x"))]
    assert pre["largest_fitted"] == max(r["C"] for r in main_line if r["width"] <= 16)
    assert pre["largest_fitted_capability"] == max(r["C"] for r in main_line)
    assert results["headline"]["capability_ratio"] == pytest.approx(t["C"] / pre["largest_fitted_capability"])
    assert results["headline"]["ratio_to_largest_fitted"] > 5
    loss = results["headline"]["quantities"]["loss_vs_compute"]
    assert loss["actual"] == pytest.approx(json.loads((out / "target" / "summary.json").read_text())["final_eval_loss"])
    assert loss["lo"] <= loss["predicted"] <= loss["hi"]
    # the held-out fit on the 3 smallest sizes predicted the 4th size and the target, before they trained
    cal = json.loads((out / "calibration" / "pre_k3.json").read_text())
    assert cal["fitted_sizes"] == [8, 12, 16] and set(cal["targets"]) == {"w20_s0", "target_w48"}
    for name, folder in (
        ("w20_s0", out / "runs" / "w20_s0"),
        ("w20_s1", out / "runs" / "w20_s1"),
        ("target_w48", out / "target"),
    ):
        trained = json.loads((folder / "summary.json").read_text())["finished_at"]
        made = _epoch(cal["created"])
        assert made < trained, f"{name} finished before its calibration prediction was made"
    rows = [r for r in results["calibration"]["rows"] if r["quantity"] == "loss_vs_compute"]
    assert {r["target"] for r in rows} == {"w20_s0", "target_w48"}
    assert all(r["ratio"] > 1 for r in rows)
    assert results["calibration"]["coverage"]["loss_vs_compute"]["predictions"] == 2
    # the exact pass probability has no floor: its law keeps every problem, and the target is checked on it
    items = json.loads((out / "capability_items.json").read_text())
    for task, problems in items.items():
        fit = pre["capability_fits"][f"{task}_exact"]
        assert fit["problems_used"] == [p["id"] for p in problems]
        verdict = results["headline"]["quantities"][f"{task}_exact"]
        assert 0 < verdict["actual"] < 1 and verdict["lo"] <= verdict["predicted"] <= verdict["hi"]
        assert results["calibration"]["coverage"][f"{task}_exact"]["predictions"] == 2
    # a fitted size's capability is checked on its seeds pooled (the law's resolution), the loss on the run
    q = "arithmetic_exact"
    (row,) = [r for r in results["calibration"]["rows"] if r["target"] == "w20_s0" and r["quantity"] == q]
    probs = [
        {
            r["id"]: r["pass_prob"]
            for r in json.loads((out / "runs" / f"w20_s{s}" / "capability.json").read_text())["results"]
        }
        for s in (0, 1)
    ]
    ids = cal["capability_fits"][q]["problems_used"]
    assert row["seeds_pooled"] == 2
    assert row["actual"] == pytest.approx(math.exp(np.mean([math.log((probs[0][i] + probs[1][i]) / 2) for i in ids])))
    assert {r["seeds_pooled"] for r in results["calibration"]["rows"] if r["quantity"] == "loss_vs_compute"} == {1}


def _epoch(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


def test_packed_corpus_is_tokenized_once_and_reused(tiny_corpus, tmp_path):
    import datasets
    import torch

    from alignlab.data.packing import pack_documents, packed_blocks
    from alignlab.models.load import load_tokenizer

    tok = load_tokenizer(tiny_corpus["tokenizer"])
    train = datasets.load_from_disk(tiny_corpus["corpus"])["train"]
    first = packed_blocks(train, "text", tok, 32, str(tmp_path))
    assert torch.equal(first, pack_documents(list(train["text"]), tok, 32))
    cached = list(tmp_path.glob("packed_*.pt"))
    assert len(cached) == 1
    torch.save(torch.zeros_like(first, dtype=torch.int32), cached[0])  # mark it: a reuse reads the file
    assert torch.equal(packed_blocks(train, "text", tok, 32, str(tmp_path)), torch.zeros_like(first))
    packed_blocks(train, "text", tok, 16, str(tmp_path))  # another seq_len is another entry
    assert len(list(tmp_path.glob("packed_*.pt"))) == 2
    in_memory = datasets.Dataset.from_dict({"text": list(train["text"])})  # no stable fingerprint: never cached
    packed_blocks(in_memory, "text", tok, 32, str(tmp_path))
    assert len(list(tmp_path.glob("packed_*.pt"))) == 2
