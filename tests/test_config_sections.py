"""Shared config sections: nested keys, old flat keys that still work (with a warning), --help by section."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest

from alignlab.cli import main
from alignlab.config import ConfigError, apply, arg, help_lines, renamed_keys, resolve
from alignlab.sections import ModelSource, OptimSettings, RunSettings


@dataclass
class ToySection:
    coef: float = arg(0.0, "a stage's own section")


@dataclass
class ToyConfig:
    RENAMED: ClassVar[dict[str, str]] = {"toy_coef": "toy.coef", "warmup_iterations": "optim.warmup_steps"}

    data: str = arg("d", "a key that stays flat")
    run: RunSettings = arg(factory=lambda: RunSettings(log_interval=1), help=RunSettings.HELP)
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    optim: OptimSettings = arg(factory=lambda: OptimSettings(lr=4e-5), help=OptimSettings.HELP)
    toy: ToySection = arg(factory=ToySection, help="the toy's own section")
    output_dir: str = arg("out", "stays flat everywhere")


def test_old_keys_map_to_their_sections():
    moved = renamed_keys(ToyConfig)
    assert moved["seed"] == "run.seed" and moved["lr"] == "optim.lr" and moved["tokenizer"] == "source.tokenizer"
    assert moved["toy_coef"] == "toy.coef" and moved["warmup_iterations"] == "optim.warmup_steps"
    assert "coef" not in moved  # only shared sections are flattened without being listed
    assert "data" not in moved and "output_dir" not in moved


def test_an_old_flat_key_still_works_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match=r"'lr' is now 'optim.lr'"):
        cfg = apply(ToyConfig(), {"lr": 1e-3, "seed": 3, "toy_coef": 0.5}, "test")
    assert cfg.optim.lr == 1e-3 and cfg.run.seed == 3 and cfg.toy.coef == 0.5
    assert cfg.run.log_interval == 1 and cfg.optim.weight_decay == 0.0  # the rest keeps the stage's defaults


def test_new_keys_give_no_warning_and_mix_with_old_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = resolve(ToyConfig, overrides={"optim.lr": "2e-3", "run.seed": "5"})
    assert cfg.optim.lr == 2e-3 and cfg.run.seed == 5
    with pytest.warns(FutureWarning):
        cfg = apply(ToyConfig(), {"optim": {"lr": 1e-3}, "seed": 2}, "test")
    assert cfg.optim.lr == 1e-3 and cfg.run.seed == 2


def test_the_same_setting_given_twice_differently_is_refused():
    with pytest.raises(ConfigError, match=r"'lr' and 'optim.lr' both given"), pytest.warns(FutureWarning):
        apply(ToyConfig(), {"optim": {"lr": 1e-3}, "lr": 2e-3}, "test")


def test_bad_values_under_an_old_key_are_named_by_the_new_one():
    with pytest.raises(ConfigError, match=r"'run.seed' expects an integer"), pytest.warns(FutureWarning):
        apply(ToyConfig(), {"seed": "many"}, "test")
    with pytest.raises(ConfigError, match=r"unknown key 'sede'"):
        apply(ToyConfig(), {"sede": 1}, "test")


def test_help_lists_each_section_under_its_header():
    text = "\n".join(help_lines(ToyConfig))
    assert text.index("--data") < text.index("run: how the run goes") < text.index("--run.seed")
    assert "optim: the AdamW optimiser" in text and "--optim.lr (float, default: 4e-05)" in text
    assert "--run.log_interval (int, default: 1)" in text  # the stage's own default, not the section's


def test_a_real_stage_takes_an_old_key_from_the_command_line(tmp_path, capsys):
    """`alignlab sft --lr X --help` style: the CLI resolves the old key into its section with a warning."""
    from alignlab.stages.registry import STAGES

    cls, presets, _ = STAGES["sft"].load()
    if "optim" not in {f for f in cls.__dataclass_fields__}:
        pytest.skip("the SFT stage has no optim section")
    with pytest.warns(FutureWarning, match="optim.lr"):
        cfg = resolve(cls, presets, "smoke", None, {"lr": "0.25"})
    assert cfg.optim.lr == 0.25
    assert main(["sft", "--help"]) == 0
    assert "--optim.lr" in capsys.readouterr().out


def test_the_command_line_says_which_key_moved_in_one_plain_line(tmp_path, capsys):
    from alignlab.stages.registry import STAGES

    if "optim" not in STAGES["sft"].load()[0].__dataclass_fields__:
        pytest.skip("the SFT stage has no optim section")
    # a missing model fails after the config resolved: what matters here is the line on stderr
    main(["sft", "--preset", "smoke", "--lr", "0.25", "--model", str(tmp_path / "none"), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "alignlab sft: deprecated: command line: 'lr' is now 'optim.lr'" in err
