"""Configs resolve in layers (defaults < preset < YAML < CLI), and bad input is refused by name."""

from __future__ import annotations

import pytest

from alignlab.cli import main
from alignlab.config import ConfigError, parse_overrides, resolve, to_yaml
from alignlab.stages.pretrain import PRESETS, PretrainConfig


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("max_steps: 7\noptim:\n  lr: 0.01\nmodel:\n  n_layer: 3\n")
    cfg = resolve(PretrainConfig, PRESETS, "smoke", f, {"optim.lr": "0.5", "model.d_model": "96"})
    assert cfg.seq_len == PRESETS["smoke"]["seq_len"]  # from the preset
    assert cfg.max_steps == 7 and cfg.model.n_layer == 3  # YAML over preset
    assert cfg.optim.lr == 0.5 and cfg.model.d_model == 96  # CLI over YAML
    assert cfg.model.n_head == PRESETS["smoke"]["model"]["n_head"]  # untouched nested key keeps preset


def test_resolved_yaml_round_trips(tmp_path):
    cfg = resolve(PretrainConfig, PRESETS, "smoke", None, {"model.init_from": "x/y"})
    f = tmp_path / "resolved.yaml"
    f.write_text(to_yaml(cfg))
    assert resolve(PretrainConfig, None, None, f, None) == cfg


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"max_stepz": "3"}, "unknown key 'max_stepz'"),
        ({"model.d_modl": "3"}, "unknown key 'model.d_modl'"),
        ({"max_steps": "three"}, "'max_steps' expects an integer"),
        ({"run.resume": "maybe"}, "'run.resume' expects true/false"),
        ({"optim.lr": "fast"}, "'optim.lr' expects a number"),
    ],
)
def test_bad_cli_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve(PretrainConfig, PRESETS, None, None, overrides)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("max_steps: 3\nlr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d"):
        resolve(PretrainConfig, None, None, f, None)
    f.write_text("seq_lenn: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'seq_lenn'"):
        resolve(PretrainConfig, None, None, f, None)
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        resolve(PretrainConfig, None, None, tmp_path / "nope.yaml", None)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*smoke"):
        resolve(PretrainConfig, PRESETS, "huge", None, None)


def test_parse_overrides_flags_and_equals():
    ov, preset, config, h = parse_overrides(
        ["--preset", "smoke", "--resume", "--max-steps=5", "--model.d_model", "8", "--config", "a.yaml"]
    )
    assert (preset, config, h) == ("smoke", "a.yaml", False)
    assert ov == {"resume": "true", "max_steps": "5", "model.d_model": "8"}


def test_cli_help_lists_every_key_with_default(capsys):
    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    for key in ("--max_steps", "--model.d_model", "--optim.lr", "--run.resume", "--output_dir"):
        assert key in out
    assert "default: 700" in out


def test_cli_refuses_unknown_stage_and_key(capsys):
    assert main(["pretrian"]) == 2
    assert "unknown stage 'pretrian'" in capsys.readouterr().err
    assert main(["pretrain", "--max_stepz", "1"]) == 2
    assert "unknown key 'max_stepz'" in capsys.readouterr().err


def test_cli_missing_data_is_named(tmp_path, capsys):
    rc = main(
        [
            "pretrain",
            "--data",
            str(tmp_path / "missing_corpus"),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2  # the input was refused: one line, no traceback
    err = capsys.readouterr().err
    assert "alignlab pretrain: error:" in err and "not found" in err and str(tmp_path) in err
    # refused before it wrote anything: no half-made output folder is left behind
    assert not (tmp_path / "out").exists()


def test_mapping_and_list_overrides_parse_from_the_command_line():
    from alignlab.stages.pipeline import PipelineConfig

    cfg = resolve(
        PipelineConfig,
        None,
        None,
        None,
        {"stage_overrides": "{pretrain: {max_steps: 5}}", "stages": "[world, pretrain]"},
    )
    assert cfg.stage_overrides == {"pretrain": {"max_steps": 5}}
    assert cfg.stages == ["world", "pretrain"]
    with pytest.raises(ConfigError, match="'stage_overrides' expects a mapping"):
        resolve(PipelineConfig, None, None, None, {"stage_overrides": "[1, 2]"})
