import pytest

from asr_zoo.config import ConfigError, compose, group_choices, load_config, save_config


def test_defaults_compose_and_validate():
    cfg = compose()
    assert cfg.objective.name == "ctc" and cfg.attention.name == "softmax"
    assert cfg.data.features.num_mel_bins == 80


def test_group_choice_and_dotted_override():
    cfg = compose(["encoder=conformer", "encoder.num_layers=2", "optim.lr=0.5", "data.train_splits=[a,b]"])
    assert cfg.encoder.block == "conformer" and cfg.encoder.num_layers == 2
    assert cfg.optim.lr == 0.5 and list(cfg.data.train_splits) == ["a", "b"]


def test_typo_in_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as e:
        compose(["encoder.num_layer=2"])
    assert "num_layer" in str(e.value) and "num_layers" in str(e.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'objectiv'.*valid groups"):
        compose(["objectiv=ctc"])


def test_unknown_choice_lists_choices():
    with pytest.raises(ConfigError) as e:
        compose(["attention=sofmax"])
    assert "sofmax" in str(e.value) and "softmax" in str(e.value)


def test_wrong_type_and_enum():
    with pytest.raises(ConfigError, match="num_layers"):
        compose(["encoder.num_layers=many"])
    with pytest.raises(ConfigError, match="valid choices: conv2d, imputer_conv"):
        compose(["encoder.frontend=conv3d"])


def test_every_shipped_choice_composes():
    for group in ("data", "encoder", "attention", "objective", "trainer"):
        for choice in group_choices(group):
            compose([f"{group}={choice}"])


def test_save_load_roundtrip_with_override(tmp_path):
    cfg = compose(["encoder.num_layers=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml", ["trainer.max_steps=7"])
    assert again.encoder.num_layers == 3 and again.trainer.max_steps == 7


def test_run_paths_take_placeholders(tmp_path):
    """run_dir and objective.expert are written once for every seed of a sweep."""
    from asr_zoo.objectives.imputer import ImputerModule
    from asr_zoo.train import resolve_run_dir

    cfg = compose(["objective=imputer_dp", f"objective.expert={tmp_path}/ctc-s{{seed}}", "seed=2",
                   "run_dir=runs/{objective}-{encoder}-{trainer}-s{seed}"])
    assert str(resolve_run_dir(cfg)) == "runs/imputer_dp-transformer-cpu-s2"
    with pytest.raises(ConfigError, match=f"objective.expert={tmp_path}/ctc-s2: not a trained run"):
        ImputerModule.check_training_config(cfg)
