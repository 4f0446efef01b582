"""alignlab study sizes: the recipe at 3 model sizes on one world, every policy against the largest SFT (InstructGPT
Figure 1), the base model also few-shot prompted; killed, it resumes and reuses every finished step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from alignlab.config import ConfigError, resolve
from alignlab.evaluate.few_shot import cut_at_stop, pick_demonstrations, prompt_ids, stop_at_next_question
from alignlab.evaluate.sampling import PolicySamples
from alignlab.report.sizes_study import sizes_section, verdict_sentence
from alignlab.stages.registry import STAGES, run_stage
from alignlab.studies.sizes import SIZE_STEPS, SizeStudyConfig

SRC = Path(__file__).resolve().parents[1] / "src"
SIZES = [  # 1-layer Llamas, each twice as wide: 856, 3.4k, 13.4k non-embedding parameters (15.7x)
    {"name": f"d{d}", "d_model": d, "n_layer": 1, "n_head": 1, "d_ff": 3 * d} for d in (8, 16, 32)
]
# As small as the steps go: every size pretrains on the same 10 x 8 blocks of 128 tokens (the smoke world's
# 64-token context has no room for a few-shot prefix), then one epoch, one PPO iteration, 12 test prompts.
SETTINGS = {
    "sizes": SIZES,
    "eval_prompts": 12,
    "few_shot_k": 2,
    "stage_overrides": {
        "pretrain": {"seq_len": 128, "batch_size": 8, "max_steps": 10, "eval_interval": 10, "eval_blocks": 4},
        "sft": {"epochs": 1},
        "compare": {"max_prompts": 24},
        "ppo": {"iterations": 1},
        "ppo_ptx": {"iterations": 1},
    },
}


def _finished_at(folder: Path) -> dict[str, float]:
    """finished_at of every summary.json under ``folder`` (the study's own left out: it is rewritten)."""
    return {
        str(p.relative_to(folder)): json.loads(p.read_text())["finished_at"]
        for p in folder.rglob("summary.json")
        if p.parent != folder
    }


@pytest.fixture(scope="module")
def study(smoke_pipeline_run, tmp_path_factory):
    """The shared smoke run's world, tokenizer and settings; the study killed (SIGKILL) after its 4th step, then
    run to the end in this process."""
    run = tmp_path_factory.mktemp("sizes") / "run"
    for step in ("world", "tokenizer"):
        shutil.copytree(smoke_pipeline_run / step, run / step)
    shutil.copy(smoke_pipeline_run / "config.yaml", run / "config.yaml")
    config = run.parent / "study.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(run), **SETTINGS}))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ALIGNLAB_KILL_AT": "stage:4",  # after the smallest size's reward model
    }
    cmd = [sys.executable, "-m", "alignlab.cli", "study", "sizes", "--preset", "smoke", "--config", str(config)]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = run / "study_sizes"
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = _finished_at(out)
    cls, presets, _ = STAGES["study sizes"].load()
    cfg = resolve(cls, presets, "smoke", str(config), {})
    summary = run_stage("study sizes", cfg)
    return {"run": run, "out": out, "cfg": cfg, "summary": summary, "before_kill": before}


def test_sizes_are_refused_by_the_key_that_is_wrong():
    with pytest.raises(ConfigError, match=r"'sizes\[0\]' must have exactly the keys"):
        SizeStudyConfig(sizes=[{"name": "a", "d_model": 8}, SIZES[1]])
    with pytest.raises(ConfigError, match="at least two"):
        SizeStudyConfig(sizes=SIZES[:1])
    with pytest.raises(ConfigError, match="names must differ"):
        SizeStudyConfig(sizes=[SIZES[0], SIZES[0]])
    with pytest.raises(ConfigError, match=r"'sizes\[1\]': d_model 16 is not divisible by n_head 3"):
        SizeStudyConfig(sizes=[SIZES[0], {**SIZES[1], "n_head": 3}])
    with pytest.raises(ConfigError, match="stage_overrides.pretrain.model"):
        SizeStudyConfig(stage_overrides={"pretrain": {"model.d_model": 8}})
    with pytest.raises(ConfigError, match="a size runs pretrain"):
        SizeStudyConfig(stage_overrides={"dpo": {}})


def test_every_size_trains_its_own_recipe_on_one_world_and_is_judged_against_the_largest_sft(study):
    out, summary = study["out"], study["summary"]
    sizes = summary["sizes"]
    assert [s["name"] for s in sizes] == ["d8", "d16", "d32"]
    params = [s["non_embedding_params"] for s in sizes]
    assert params[-1] / params[0] >= 10
    assert len({s["tokens_seen"] for s in sizes}) == 1  # the same pretraining tokens for every size
    for s in SIZES:
        folder = out / s["name"]
        assert all((folder / step / "summary.json").is_file() for step in SIZE_STEPS)
        assert (folder / "world").resolve() == (study["run"] / "world").resolve()  # one world, linked
        assert json.loads((folder / "pretrain" / "config.json").read_text())["hidden_size"] == s["d_model"]
        assert yaml.safe_load((folder / "reward" / "config.yaml").read_text())["model"] == str(folder / "sft")
    assert summary["baseline"] == "SFT d32"
    points = {(p["size"], p["method"]): p for p in summary["points"]}
    assert len(points) == 3 * 5
    assert points[("d32", "sft")]["win_rate_heldout_labelers"]["value"] == 0.5  # the baseline against itself
    for p in points.values():
        for key in ("win_rate_heldout_labelers", "win_rate_train_labelers"):
            assert 0.0 <= p[key]["low"] <= p[key]["value"] <= p[key]["high"] <= 1.0
    h = summary["head_to_head"]
    assert (h["smallest"], h["largest"]) == ("d8", "d32")
    results = json.loads((out / "evaluate" / "head_to_head" / "results.json").read_text())["policies"]
    base_win = results["base"]["win_rate_heldout_labelers"]["value"]
    assert h["base"]["win_rate_heldout_labelers"]["value"] == pytest.approx(1 - base_win)
    assert (out / "sizes.png").stat().st_size > 0
    # the run's report gets the section and its plain verdict
    from alignlab.report.build import ReportConfig
    from alignlab.report.build import run as build_report

    build_report(ReportConfig(run_dir=str(study["run"])))
    md = (study["run"] / "report.md").read_text()
    assert "(InstructGPT Figure 1)" in md and verdict_sentence(h) in md
    assert (study["run"] / "report_sizes.png").is_file()
    # FLAN across the same sizes: each size's base model instruction-tuned with the held-out clusters left out
    flan = summary["flan"]
    assert [p["size"] for p in flan["points"]] == ["d8", "d16", "d32"]
    for s in SIZES:
        tuned = yaml.safe_load((out / s["name"] / "instruct_tune_s0" / "config.yaml").read_text())
        assert tuned["model"] == str(out / s["name"] / "pretrain")
    for p in flan["points"]:
        assert 0.0 <= p["rank_accuracy"]["instruction"]["value"] <= 1.0
    assert "(FLAN Figure 7)" in md and (out / "flan_sizes.png").is_file()


def test_the_prompted_base_model_sees_train_demonstrations_and_stops_at_the_next_question(study):
    out, run = study["out"], study["run"]
    results = json.loads((out / "evaluate" / "d32" / "results.json").read_text())
    shot = results["few_shot"]
    evaluated = datasets.load_from_disk(str(run / "world" / "test"))["test"]["prompt"][:12]
    train = set(datasets.load_from_disk(str(run / "world" / "sft"))["train"]["prompt"])
    assert shot["k"] == 2 and shot["policies"] == ["base_prompted"] and shot["mean_shown"]["base_prompted"] > 0
    assert all(d["prompt"] in train and d["prompt"] not in evaluated for d in shot["demonstrations"])
    assert results["policies"]["base_prompted"]["kl_to_baseline"]["value"] is None  # a different prompt: no KL
    answers = [json.loads(line) for line in (out / "evaluate" / "d32" / "samples.jsonl").read_text().splitlines()]
    prompted = [a["response"] for a in answers if a["policy"] == "base_prompted"]
    assert len(prompted) == 12 and not any("Question:" in a or "\n" in a for a in prompted)


def test_a_killed_study_resumes_and_a_second_run_reuses_everything(study, capsys):
    out, before = study["out"], study["before_kill"]
    # the kill came after the smallest size's 4th step: those were kept, the rest run after
    assert sorted(before) == [f"d8/{step}/summary.json" for step in sorted(SIZE_STEPS[:4])]
    after = _finished_at(out)
    assert {k: after[k] for k in before} == before
    steps = {k: v for k, v in after.items() if "instruct_tune" not in k}  # FLAN's tuned models are counted apart
    assert len(steps) == 3 * len(SIZE_STEPS) + 4  # every step of every size, 3 + 1 evaluations
    run_stage("study sizes", study["cfg"])
    assert _finished_at(out) == after
    log = capsys.readouterr().out
    assert "already finished" in log and log.count("already evaluated") == 4


def test_the_few_shot_prompt_holds_k_demonstrations_then_the_question(smoke_pipeline_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smoke_pipeline_run / "tokenizer"))
    rows = datasets.load_from_disk(str(smoke_pipeline_run / "world" / "sft"))["train"]
    prompts, responses = rows["prompt"], rows["completion"]
    demos = pick_demonstrations(prompts, responses, 3, exclude=set(prompts) - set(prompts[-8:]), seed=0)
    assert len(demos) == 3 and all(p in prompts[-8:] for p, _ in demos)  # never an excluded (evaluated) prompt
    question = "What colour is Bruk?"
    ids, shown = prompt_ids(tok, demos, question, budget=1000)
    text = tok.decode(ids)
    assert shown == 3 and text.endswith(f"Question: {question}\nAnswer:")
    assert all(f"Question: {p}\nAnswer: {r}\n" in text for p, r in demos)
    short, kept = prompt_ids(tok, demos, question, budget=len(ids) - 1)  # no room for all: the first one goes
    assert kept == 2 and demos[0][0] not in tok.decode(short) and tok.decode(short).endswith("Answer:")
    with pytest.raises(ConfigError, match="few_shot_k"):
        pick_demonstrations(prompts[:2], responses[:2], 3, exclude=set(), seed=0)


def test_an_answer_is_cut_where_the_model_starts_the_next_question():
    assert cut_at_stop(" Bruk is blue.\nQuestion: what is Zel?\nAnswer: red") == (" Bruk is blue.", True)
    assert cut_at_stop(" Bruk is blue. Question: and Zel?") == (" Bruk is blue.", True)
    assert cut_at_stop(" Bruk is blue.") == (" Bruk is blue.", False)

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    s = PolicySamples([[" a b\nQuestion: c d e", " f g"]], np.array([[9.0, 2.0]]), np.array([[0.0, 1.0]]))
    stop_at_next_question(s, Tok())
    assert s.texts == [["a b", "f g"]] and s.length.tolist() == [[3.0, 2.0]] and s.eos.tolist() == [[1.0, 1.0]]


def test_few_shot_policies_must_be_evaluated_and_not_the_baseline():
    from alignlab.evaluate.stage import EvaluateConfig, _check

    policies = {"sft": "a", "base": "b"}
    with pytest.raises(ConfigError, match=r"few_shot: \['gpt'\] not among the policies"):
        _check(EvaluateConfig(policies=policies, few_shot=["gpt"]))
    with pytest.raises(ConfigError, match="cannot be few-shot prompted"):
        _check(EvaluateConfig(policies=policies, few_shot=["sft"]))


def _head_to_head(low_base: float, low_prompted: float) -> dict:
    def win(low):
        return {"win_rate_heldout_labelers": {"value": low + 0.04, "low": low, "high": low + 0.08}}

    return {"smallest": "d32", "smallest_params": 53536, "largest": "d128", "largest_params": 853120,
            "base": win(low_base), "base_prompted": win(low_prompted)}  # fmt: skip


def test_the_verdict_says_whether_the_smallest_ppo_ptx_beats_the_largest_base_model(tmp_path):
    yes = verdict_sentence(_head_to_head(0.61, 0.52))
    assert yes.startswith("Yes: held-out labelers prefer the smallest PPO-ptx (d32, 53,536 non-embedding")
    assert "unprompted: 65.0% [61.0, 69.0]; few-shot prompted: 56.0% [52.0, 60.0]" in yes
    no = verdict_sentence(_head_to_head(0.45, 0.5))  # a lower bound at 50% is not above it
    assert no.startswith("No: the smallest PPO-ptx (d32") and "does not beat the largest base model (d128" in no
    partly = verdict_sentence(_head_to_head(0.55, 0.40))
    assert (
        partly.startswith("Only unprompted:") and "not when it is few-shot prompted (few-shot prompted: 44.0%" in partly
    )
    # the section renders from a summary alone
    from alignlab.report.doc import Doc

    point = {"win_rate_heldout_labelers": {"value": 0.5, "low": 0.4, "high": 0.6}}
    point["win_rate_train_labelers"] = point["win_rate_heldout_labelers"]
    summary = {
        "run_dir": "runs/x", "seed": 0, "baseline": "SFT d128", "n_prompts": 320, "few_shot": {"k": 3},
        "methods": {"base": "base (GPT)", "ppo_ptx": "PPO-ptx"}, "head_to_head": _head_to_head(0.45, 0.5),
        "sizes": [{**SIZES[0], "name": n, "non_embedding_params": p, "tokens_seen": 100, "seconds": {"sft": 1.0}}
                  for n, p in (("d32", 53536), ("d128", 853120))],
        "points": [{**point, "size": n, "non_embedding_params": p, "method": m}
                   for n, p in (("d32", 53536), ("d128", 853120)) for m in ("base", "ppo_ptx")],
    }  # fmt: skip
    doc = Doc()
    sizes_section(doc, summary, tmp_path)
    md = "\n".join(doc.md)
    assert "| PPO-ptx | 50.0% [40.0, 60.0] | 50.0% [40.0, 60.0] |" in md and no in md
