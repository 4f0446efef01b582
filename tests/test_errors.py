"""The user's mistakes end in one named line and exit status 2, before the stage writes anything; bugs keep their
traceback.

Missing models, tokenizers and data (local paths and hub ids that are neither cached nor reachable), and data
without the column a stage reads, each say what is wrong and which key fixes it. A stage that refuses its input
leaves its output folder as it found it: a finished run's files survive a failed re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.errors import ConfigError, DataError, MissingInputError, ModelNotFoundError, UserError
from alignlab.run_lock import LOCK_NAME
from fixtures_rlhf import rlhf_inputs  # noqa: F401

SRC = Path(__file__).resolve().parents[1] / "src"


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _error_lines(err: str) -> list[str]:
    """alignlab's own lines on stderr (libraries' progress bars aside), without those about a deprecated key."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("alignlab ") and ": deprecated: " not in line]


def _refused(capsys, argv: list[str]) -> str:
    """Run the CLI, check it refused the input in one plain line with status 2, and return that line."""
    rc = main(argv)
    lines = _error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"alignlab {argv[0]}: error: "), (rc, lines)
    return lines[0]


@pytest.fixture
def offline(monkeypatch):
    """The hub unreachable, as on a machine without network (and without the 50 s of retries)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# ------------------------------------------------------------------------------ the error family


def test_every_named_error_is_a_user_error_and_keeps_its_old_base():
    from alignlab.config import ConfigError as ConfigErrorFromConfig
    from alignlab.data.load import DataError as DataErrorFromData
    from alignlab.models.load import ModelLoadError

    assert ConfigErrorFromConfig is ConfigError and DataErrorFromData is DataError
    for cls in (ConfigError, DataError, ModelLoadError, MissingInputError, ModelNotFoundError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
    # a model that is not there is also what transformers raised for it before (an OSError)
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(ModelNotFoundError, OSError)
    assert str(MissingInputError("no such run: x")) == "no such run: x"


def test_a_refusal_is_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    import alignlab.stages.tokenizer as stage

    def refuse(cfg):
        raise DataError("first line\n  second line")  # a library's message may span lines

    monkeypatch.setattr(stage, "run", refuse)
    line = _refused(capsys, ["tokenizer", "--output-dir", str(tmp_path / "tok")])
    assert line == "alignlab tokenizer: error: first line second line"


def test_a_config_error_while_resolving_is_the_same_kind_of_line(capsys):
    line = _refused(capsys, ["sft", "--optim.lr", "fast"])
    assert "'optim.lr' expects a number" in line


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug")])
def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, error):
    """Only the user's mistakes become one line: a ValueError from a bug is not passed off as one."""
    import alignlab.stages.tokenizer as stage

    def bug(cfg):
        raise error

    monkeypatch.setattr(stage, "run", bug)
    with pytest.raises(type(error)):
        main(["tokenizer", "--output-dir", str(tmp_path / "tok")])


# -------------------------------------------------------------------- missing models and data


def test_missing_local_model_is_named(tmp_path, capsys):
    line = _refused(capsys, ["sft", "--model", "does/not/exist", "--output-dir", str(tmp_path / "out")])
    assert "model path not found: does/not/exist" in line
    line = _refused(capsys, ["sft", "--model", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "out")])
    assert f"model path not found: {tmp_path / 'nothing'}" in line


def test_missing_tokenizer_is_named(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    argv = ["sft", "--model", rlhf_inputs["llama_policy"], "--source.tokenizer", str(tmp_path / "no_tok")]
    line = _refused(capsys, argv + ["--data", rlhf_inputs["preference"], "--output-dir", str(tmp_path / "o")])
    assert f"tokenizer path not found: {tmp_path / 'no_tok'}" in line


def test_a_folder_without_tokenizer_files_names_the_key(tmp_path):
    from alignlab.models.load import ModelLoadError, load_tokenizer

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no tokenizer files .*source\.tokenizer"):
        load_tokenizer(str(tmp_path / "m"))


def test_hub_ids_that_are_not_cached_say_so_offline(offline):
    from alignlab.data.load import load_dataset_any
    from alignlab.models.load import load_causal_lm, load_tokenizer
    from alignlab.models.reward_model import load_reward_model

    for load, what in ((load_causal_lm, "model"), (load_reward_model, "reward model"), (load_tokenizer, "tokenizer")):
        with pytest.raises(ModelNotFoundError) as e:
            load("org/name-that-is-not-cached")
        assert str(e.value).startswith(f"{what} 'org/name-that-is-not-cached' not found locally")
        assert "not in the Hugging Face cache" in str(e.value) and "hub could not be reached" in str(e.value)
    with pytest.raises(DataError, match=r"'org/data-not-cached' is no local file .*hub could not be reached"):
        load_dataset_any("org/data-not-cached")


def test_a_hub_repo_that_does_not_exist_says_so():
    """What the hub client raises for a repo that is not there (checked on the message, without the network)."""
    from types import SimpleNamespace

    from huggingface_hub.errors import RepositoryNotFoundError

    from alignlab.models.load import why_not_loadable

    response = SimpleNamespace(headers={}, request=None)  # what the client reads off the HTTP response
    try:
        try:
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)
        except RepositoryNotFoundError as cause:
            raise OSError("org/x is not a local folder and is not a valid model identifier") from cause
    except OSError as e:
        message = why_not_loadable("model", "org/x", e)
    assert message.startswith("model 'org/x' not found: no local folder by that name")
    assert "no such repo" in message


def test_hub_model_from_the_command_line_offline_ends_in_one_line(tmp_path):
    """The whole way, as a user runs it: a hub id, no network, a fresh process (the client reads its env at import)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(SRC)}
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignlab.cli",
            "sft",
            "--model",
            "org/name-that-is-not-cached",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = _error_lines(r.stderr)
    assert lines == [
        "alignlab sft: error: model 'org/name-that-is-not-cached' not found locally (no such folder, not in the "
        "Hugging Face cache) and the hub could not be reached (no network, or HF_HUB_OFFLINE is set); give a local "
        "folder, or download it where there is network access"
    ]
    assert not out.exists()


def test_missing_data_is_named(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    argv = ["sft", "--model", rlhf_inputs["llama_policy"], "--data", str(tmp_path / "none.jsonl")]
    line = _refused(capsys, argv + ["--output-dir", str(tmp_path / "o")])
    assert f"data not found: {tmp_path / 'none.jsonl'}" in line


# ----------------------------------------------------------------------------- absent columns


def _ppo_argv(rlhf_inputs, tmp_path, **keys) -> list[str]:  # noqa: F811
    argv = ["ppo", "--preset", "smoke", "--policy", rlhf_inputs["llama_policy"]]
    argv += ["--reward_model", rlhf_inputs["llama_rm"], "--data", rlhf_inputs["prompts"], "--world_dir", ""]
    argv += ["--ptx.data", rlhf_inputs["corpus"], "--output-dir", str(tmp_path / "ppo"), "--run.tensorboard", "false"]
    for key, value in keys.items():
        argv += [f"--{key.replace('__', '.')}", value]
    return argv


def test_ppo_ptx_on_text_without_the_column_names_the_file_and_key(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    body = _jsonl(tmp_path / "body.jsonl", [{"body": "Bruk is red."}] * 8)
    line = _refused(capsys, _ppo_argv(rlhf_inputs, tmp_path, ptx__coef="1", ptx__data=body))
    assert f"{body} (train split): no column 'text'" in line and "columns: ['body']" in line
    assert "set ptx.text_column" in line
    assert not (tmp_path / "ppo").exists()


def test_ppo_prompts_without_the_column_name_the_file_and_key(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    questions = _jsonl(tmp_path / "q.jsonl", [{"question": "What colour is Bruk?"}] * 8)
    line = _refused(capsys, _ppo_argv(rlhf_inputs, tmp_path, data=questions))
    assert f"{questions} (train split): no column 'prompt' (nor 'messages')" in line and "set prompt_column" in line


def test_evaluate_prompts_without_the_column_name_the_file_and_key(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    questions = _jsonl(tmp_path / "q.jsonl", [{"question": "What colour is Bruk?"}] * 4)
    argv = ["evaluate", "--data", questions, "--policies", f"{{sft: {rlhf_inputs['llama_policy']}}}"]
    line = _refused(capsys, argv + ["--world_dir", "", "--output-dir", str(tmp_path / "ev")])
    assert f"{questions} (test split): no column 'prompt' (nor 'messages')" in line and "set prompt_column" in line


def test_pretraining_text_without_the_column_names_the_key(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    body = _jsonl(tmp_path / "body.jsonl", [{"body": "Bruk is red."}] * 8)
    tok = tmp_path / "tok"
    rlhf_inputs["tokenizer"].save_pretrained(tok)
    for stage in ("pretrain", "tokenizer"):
        argv = [stage, "--data", body, "--text_column", "body2", "--output-dir", str(tmp_path / stage)]
        line = _refused(capsys, argv + (["--source.tokenizer", str(tok)] if stage == "pretrain" else []))
        assert "no column 'body2'" in line and "set text_column" in line


# ------------------------------------------------------------------------ no half-written output


def _finished_run(folder: Path) -> dict[str, tuple[bytes, int]]:
    """A folder as a finished run leaves it; returns each file's bytes and modification time."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: the-old-model\n")
    (folder / "summary.json").write_text('{"stage": "sft", "best_val_reward": 0.9}\n')
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    os.utime(folder / "config.yaml", ns=(1_000_000_000, 1_000_000_000))
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run folder but its run lock (empty between runs; each run takes it)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.name != LOCK_NAME}


def test_a_refused_rerun_leaves_a_finished_run_as_it_was(tmp_path, capsys):
    out = tmp_path / "sft"
    before = _finished_run(out)
    _refused(capsys, ["sft", "--model", "does/not/exist", "--output-dir", str(out)])
    assert _snapshot(out) == before  # config.yaml still describes the model beside it


def test_a_refused_first_run_leaves_no_folder(tmp_path, capsys):
    _refused(capsys, ["sft", "--model", "does/not/exist", "--output-dir", str(tmp_path / "a" / "b" / "sft")])
    assert list(tmp_path.iterdir()) == []  # nor the parents it would have created


def test_a_ptx_refusal_keeps_the_previous_ppo_run(tmp_path, capsys, rlhf_inputs):  # noqa: F811
    before = _finished_run(tmp_path / "ppo")
    body = _jsonl(tmp_path / "body.jsonl", [{"body": "Bruk is red."}] * 8)
    _refused(capsys, _ppo_argv(rlhf_inputs, tmp_path, ptx__coef="1", ptx__data=body))
    assert _snapshot(tmp_path / "ppo") == before


def test_a_stage_that_wrote_outputs_before_refusing_keeps_them(tmp_path, capsys, monkeypatch):
    """Its config.yaml then describes what it wrote; nothing of it is deleted."""
    import alignlab.stages.tokenizer as stage

    def writes_then_refuses(cfg):
        (Path(cfg.output_dir) / "partial.json").write_text("{}")
        raise DataError("row 7: bad")

    monkeypatch.setattr(stage, "run", writes_then_refuses)
    out = tmp_path / "tok"
    _refused(capsys, ["tokenizer", "--vocab_size", "512", "--output-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "config.yaml", "partial.json"]
    assert "vocab_size: 512" in (out / "config.yaml").read_text()


def test_the_pipeline_refusing_a_step_keeps_the_steps_before_it(tmp_path, capsys, monkeypatch):
    import alignlab.stages.tokenizer as tokenizer_stage
    import alignlab.world.stage as world_stage

    def refuse(cfg):
        raise DataError("no text")

    monkeypatch.setattr(world_stage, "run", lambda cfg: {})  # a finished world, without building one
    monkeypatch.setattr(tokenizer_stage, "run", refuse)
    run = tmp_path / "run"
    line = _refused(capsys, ["pipeline", "--stages", "[world, tokenizer]", "--output-dir", str(run)])
    assert line == "alignlab pipeline: error: no text"
    assert (run / "world" / "summary.json").is_file() and (run / "config.yaml").is_file()
    assert not (run / "tokenizer").exists()
