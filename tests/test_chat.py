"""alignlab chat: several models answer one prompt side by side, scored by a reward model and, on the
world's own prompts, by its labelers."""

from __future__ import annotations

import io
import subprocess
import sys

import datasets

from alignlab.chat import Answer, main, render
from fixtures_pipeline import smoke_world  # noqa: F401
from fixtures_rlhf import rlhf_inputs  # noqa: F401


def test_two_models_answer_side_by_side_through_stdin_with_reward_scores(rlhf_inputs):  # noqa: F811
    inp = rlhf_inputs
    cmd = [sys.executable, "-m", "alignlab.cli", "chat", inp["llama_policy"], inp["gpt2_policy"]]
    cmd += ["--reward_model", inp["llama_rm"], "--names", "[llama, gpt2]", "--width", "100", "--max_new_tokens", "8"]
    cmd += ["--device", "cpu"]
    done = subprocess.run(
        cmd,
        input="What colour is Bruk?\n/help\nIs Zel red?\n/quit\nnever asked\n",
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert out[0].startswith("2 model(s): llama, gpt2.")
    titles = [line for line in out if line.startswith("llama  rm ")]
    assert len(titles) == 2  # one round per prompt; the line after /quit is never asked
    assert "gpt2  rm " in titles[0] and titles[0].index("gpt2") >= 50 - 3  # the second column starts mid-screen
    assert any(line.startswith("/quit leaves") for line in out[1:])  # /help


def test_a_world_prompt_gets_the_labelers_gold_score(smoke_world):  # noqa: F811
    prompt = datasets.load_from_disk(smoke_world["world"] + "/test")["test"][0]["prompt"]
    out = io.StringIO()
    argv = [smoke_world["pretrain"], "--world_dir", smoke_world["world"], "--max_new_tokens", "6", "--device", "cpu"]
    assert main(argv, stdin=io.StringIO(f"{prompt}\nnot a prompt of the world\n"), stdout=out) == 0
    text = out.getvalue()
    assert "pretrain  gold " in text  # the labelers' gold reward of the answer
    assert text.count("(not one of the world's prompts: no gold score)") == 1


def test_columns_wrap_to_the_screen_and_carry_the_scores():
    answers = [Answer("a", "word " * 30, {"rm": 0.5}), Answer("b", "short", {"rm": -1.25, "gold": 0.9})]
    lines = render(answers, 60).splitlines()
    assert lines[0].startswith("a  rm +0.50") and "b  rm -1.25  gold +0.90" in lines[0]
    assert all(len(line) <= 60 for line in lines) and len(lines) > 4  # the long answer wraps within its column
    assert lines[2].split()[-1] == "short"  # the short answer sits beside the first line of the long one


def test_no_model_or_mismatched_names_is_one_line_and_status_2(capsys):
    assert main([]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "alignlab chat: error: give at least one model: alignlab chat MODEL [MODEL ...]"
    )
    assert main(["m1", "m2", "--names", "[one]"]) == 2
    assert "names: 1 titles for 2 models" in capsys.readouterr().err
