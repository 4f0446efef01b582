"""What alignlab refuses so that a model, data or config file cannot run code or write where it should not.

- Weights are read only from safetensors: a folder with only pickle weights (``pytorch_model.bin``, ``*.pt``) is
  refused before anything is unpickled, with the one-line conversion a user who trusts the file can run. There is
  no opt-in: every loader (policy, reference, reward, value, judge) would need the flag threaded through, and a
  conversion done once, knowingly, outside alignlab keeps the pickle out of every later run.
- ``trust_remote_code`` is off unless the user sets the key: no preset turns it on, and every loader defaults to off.
- YAML is read with ``yaml.safe_load``: a ``!!python/...`` tag is refused by name and never constructed.
- A config or world file names outputs only inside the output folder: a sub-folder name with ``/`` or ``..``, or
  a pipeline step's ``output_dir``, is refused by name. (Input paths may point anywhere.)
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import shutil
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.config import resolve
from alignlab.errors import ConfigError, ModelLoadError
from fixtures_rlhf import rlhf_inputs  # noqa: F401

SRC = Path(__file__).resolve().parents[1] / "src" / "alignlab"


class _OpensAFile:
    """Unpickling this creates ``path``: the stand-in for a pickle that runs code on load."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_only_model(rlhf_inputs, root: Path, weights: str) -> tuple[Path, Path]:  # noqa: F811
    """A copy of the tiny Llama whose weights are a pickle that would create a marker file if loaded."""
    folder = root / f"pickled_{weights.replace('.', '_')}"
    shutil.copytree(rlhf_inputs["llama_policy"], folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = root / f"ran_{weights}"
    (folder / weights).write_bytes(pickle.dumps(_OpensAFile(marker)))
    return folder, marker


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt"])
def test_pickle_weights_are_refused_before_anything_is_unpickled(tmp_path, rlhf_inputs, weights):  # noqa: F811
    from alignlab.models.load import load_causal_lm
    from alignlab.models.reward_model import load_reward_model

    folder, marker = _pickle_only_model(rlhf_inputs, tmp_path, weights)
    for load in (load_causal_lm, load_reward_model):
        with pytest.raises(ModelLoadError) as e:
            load(str(folder))
        message = str(e.value)
        assert f"only pickle weights ({weights})" in message and "unpickling a file can run any code" in message
        assert "use_safetensors=False).save_pretrained('OUT')" in message  # how to convert, if the file is trusted
    assert not marker.exists()


def test_pickle_weights_are_refused_from_the_command_line(tmp_path, rlhf_inputs, capsys):  # noqa: F811
    folder, marker = _pickle_only_model(rlhf_inputs, tmp_path, "pytorch_model.bin")
    argv = ["sft", "--model", str(folder), "--data", rlhf_inputs["preference"], "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    assert f"alignlab sft: error: {folder}: only pickle weights (pytorch_model.bin)" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_safetensors_beside_a_pickle_are_what_is_loaded(tmp_path, rlhf_inputs):  # noqa: F811
    """A folder with both (as many hub repos have) loads, from the safetensors file."""
    from alignlab.models.load import load_causal_lm

    folder = tmp_path / "both"
    shutil.copytree(rlhf_inputs["llama_policy"], folder)
    marker = tmp_path / "ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_OpensAFile(marker)))
    assert load_causal_lm(str(folder)) is not None and not marker.exists()


def test_no_code_in_src_unpickles_or_loads_unsafe_yaml():
    """Every torch.load passes weights_only=True; YAML is read only with safe_load; nothing imports pickle;
    nothing turns trust_remote_code on or safetensors off in code."""
    problems, checked = [], {"torch.load": 0, "yaml.safe_load": 0}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names):
                    problems.append(f"{where}: imports a pickle module")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            checked[name] = checked.get(name, 0) + 1
            if name == "torch.load" and kwargs.get("weights_only") != "True":
                problems.append(f"{where}: torch.load without weights_only=True")
            if name.startswith("yaml.") and name.split(".")[-1] in ("load", "load_all", "unsafe_load", "full_load"):
                problems.append(f"{where}: {name} (use yaml.safe_load)")
            if kwargs.get("trust_remote_code") == "True" or kwargs.get("use_safetensors") == "False":
                problems.append(f"{where}: {name} with {kwargs}")
    assert not problems, "\n".join(problems)
    assert checked["torch.load"] >= 5 and checked["yaml.safe_load"] >= 5  # the scan saw the calls it checks


# ---------------------------------------------------------------------------------- trust_remote_code


def _trust_settings(cfg, prefix: str = "") -> dict[str, bool]:
    """Every trust_remote_code key in a config (at any depth), dotted name -> value."""
    found = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found.update(_trust_settings(value, f"{prefix}{f.name}."))
        elif f.name == "trust_remote_code":
            found[prefix + f.name] = value
    return found


def test_no_stage_or_preset_turns_trust_remote_code_on():
    from alignlab.stages.registry import STAGES

    seen = 0
    for name, stage in STAGES.items():
        cls, presets, _ = stage.load()
        for preset in [None, *presets]:
            settings = _trust_settings(resolve(cls, presets, preset))
            assert not any(settings.values()), f"{name} preset {preset}: {settings}"
            seen += len(settings)
    assert seen > 10  # the training stages, compare, evaluate: not a walk that found nothing


def test_trust_remote_code_needs_the_explicit_key():
    from alignlab.stages.sft import PRESETS, SFTConfig

    assert resolve(SFTConfig, PRESETS, "smoke", None, {"source.trust_remote_code": "true"}).source.trust_remote_code
    assert not resolve(SFTConfig, PRESETS, "smoke", None, {"source.tokenizer": "tok"}).source.trust_remote_code


def test_loaders_pass_trust_remote_code_off_and_safetensors_on_by_default(tmp_path, rlhf_inputs, monkeypatch):  # noqa: F811
    """What the loaders hand transformers when nobody asked for remote code: a stage's default config included."""
    import transformers

    from alignlab.models import load as model_load
    from alignlab.models import prepare, reward_model
    from alignlab.models.lora import LoraSettings
    from alignlab.sections import ModelSource

    calls = []

    def recording(original):
        def from_pretrained(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        return from_pretrained

    for cls in ("AutoModelForCausalLM", "AutoTokenizer", "AutoModelForSequenceClassification"):
        auto = getattr(transformers, cls)
        module = {"AutoModelForSequenceClassification": reward_model}.get(cls, model_load)
        monkeypatch.setattr(
            module, cls, type(cls, (), {"from_pretrained": staticmethod(recording(auto.from_pretrained))})
        )
    policy = rlhf_inputs["llama_policy"]
    model_load.load_causal_lm(policy)
    model_load.load_tokenizer(policy)
    reward_model.load_reward_model(rlhf_inputs["llama_rm"])
    prepare.load_for_training(model_load.load_causal_lm, policy, ModelSource(), LoraSettings(), "CAUSAL_LM", 0)
    assert len(calls) == 5 and all(c["trust_remote_code"] is False for c in calls)
    assert all(c["use_safetensors"] is True for c in calls if "num_labels" in c or "dtype" in c)


# --------------------------------------------------------------------------------------------- YAML


PYTHON_TAG = '!!python/object/apply:builtins.open ["{marker}", "w"]'


def test_a_config_yaml_with_a_python_tag_is_refused_and_not_run(tmp_path, capsys):
    from alignlab.stages.sft import SFTConfig

    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"epochs: 2\nmodel: {PYTHON_TAG.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"evil.yaml line 2: not valid YAML: could not determine a constructor"):
        resolve(SFTConfig, None, None, config)
    assert main(["sft", "--config", str(config), "--output-dir", str(tmp_path / "o")]) == 2
    assert "alignlab sft: error: " in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_command_line_mapping_with_a_python_tag_is_refused_and_not_run(tmp_path):
    from alignlab.stages.pipeline import PipelineConfig

    marker = tmp_path / "ran"
    for key in ("stage_overrides", "seeds"):  # a mapping and a list, both parsed as YAML
        value = (
            PYTHON_TAG.format(marker=marker) if key == "stage_overrides" else f"[{PYTHON_TAG.format(marker=marker)}]"
        )
        with pytest.raises(ConfigError, match=rf"'{key}' is not valid YAML"):
            resolve(PipelineConfig, None, None, None, {key: value})
    assert not marker.exists()


def test_a_finished_steps_config_with_a_python_tag_is_not_run(tmp_path):
    """The pipeline reads each finished step's config.yaml to see whether its settings changed."""
    from alignlab.stages.pipeline import config_changes
    from alignlab.stages.tokenizer import TokenizerConfig

    marker = tmp_path / "ran"
    (tmp_path / "config.yaml").write_text(f"vocab_size: {PYTHON_TAG.format(marker=marker)}\n")
    (changed,) = config_changes(tmp_path, TokenizerConfig())
    assert "is not valid YAML" in changed and not marker.exists()


# ------------------------------------------------------------------------ outputs stay in the output folder


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "..", ""])
def test_a_sub_folder_name_from_a_config_is_refused_by_name(name):
    from alignlab.stages.instruct_tune import PRESETS, InstructTuneConfig

    with pytest.raises(ConfigError, match=r"'heldout_clusters\[1\]': .* is not a plain name; outputs are written only"):
        resolve(InstructTuneConfig, PRESETS, "smoke", None, {"heldout_clusters": ["world_qa", name]})


def test_a_world_that_lists_a_cluster_outside_the_folder_cannot_place_a_run_there(tmp_path):
    """The cluster names instruct-tune makes sub-folders of come from the world's stats.json: a crafted world
    listing '../../escape' still cannot have it used as a folder name."""
    import json

    from alignlab.stages.instruct_tune import InstructTuneConfig

    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "stats.json").write_text(json.dumps({"clusters": ["../../escape"]}))
    with pytest.raises(ConfigError, match="not a plain name"):
        InstructTuneConfig(world_dir=str(tmp_path / "world"), heldout_clusters=["../../escape"], exclude_clusters=[])


@pytest.mark.parametrize("step, key", [("sft", "output_dir"), ("world", "output_dir"), ("report", "run_dir")])
def test_a_pipeline_step_cannot_be_sent_outside_the_run_folder(tmp_path, capsys, step, key):
    argv = ["pipeline", "--output-dir", str(tmp_path / "run"), "--stage_overrides", f"{{{step}: {{{key}: /tmp/x}}}}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"alignlab pipeline: error: stage_overrides.{step}.{key}: the pipeline writes each step in RUN/<step>" in err
    assert not (tmp_path / "run").exists()


def test_a_world_config_names_no_outputs_but_its_folder():
    """The world's config keys that hold names (demonstrators, held-out constraints) are checked against fixed
    lists, so none can become a path; output_dir is the one place it writes."""
    from alignlab.world.config import PRESETS, WorldConfig

    for key, value in (("heldout_constraints", ["../escape"]), ("demonstrators", {"../escape": 1.0})):
        with pytest.raises(ConfigError, match=f"'{key}' has unknown"):
            resolve(WorldConfig, PRESETS, "smoke", None, {key: value})
    text_keys = [f.name for f in dataclasses.fields(WorldConfig) if f.type in ("str", "list[str]", "dict")]
    assert sorted(text_keys) == ["demonstrators", "heldout_constraints", "output_dir"]


def test_input_paths_may_point_anywhere(tmp_path, rlhf_inputs):  # noqa: F811
    """Only output names are confined: data and models outside the output folder load as before."""
    from alignlab.data.load import load_dataset_any

    outside = tmp_path / ".." / tmp_path.name / "prompts.jsonl"
    shutil.copy(rlhf_inputs["prompts"], outside)
    assert len(load_dataset_any(str(outside))) == 48
