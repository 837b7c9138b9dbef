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


def test_preset_bundles_choices_and_values_and_the_command_line_wins(tmp_path):
    import shutil

    from asr_zoo.config import conf_dir

    shutil.copytree(conf_dir(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "preset" / "p.yaml").write_text(
        "encoder: conformer\ndata: {tokenizer: {type: char}}\noptim.lr: 0.5\ntrainer: {max_steps: 9}\n")
    cfg = compose(["preset=p"], root=tmp_path)
    assert cfg.encoder.block == "conformer" and cfg.data.tokenizer.type == "char"
    assert cfg.optim.lr == 0.5 and cfg.trainer.max_steps == 9
    # explicit choices and values win, wherever they stand on the command line
    cfg = compose(["encoder=transformer", "optim.lr=0.25", "preset=p"], root=tmp_path)
    assert cfg.encoder.block == "transformer" and cfg.optim.lr == 0.25 and cfg.trainer.max_steps == 9


def test_a_preset_can_start_from_another(tmp_path):
    import shutil

    from asr_zoo.config import conf_dir

    shutil.copytree(conf_dir(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "preset" / "base.yaml").write_text("encoder: conformer\noptim.lr: 0.5\noptim.warmup_steps: 7\n")
    (tmp_path / "preset" / "child.yaml").write_text("preset: base\ntrainer: demo\noptim.lr: 0.25\n")
    cfg = compose(["preset=child"], root=tmp_path)
    assert cfg.encoder.block == "conformer" and cfg.trainer.name == "demo"
    assert cfg.optim.lr == 0.25 and cfg.optim.warmup_steps == 7  # the child's value wins, the base fills in
    assert compose(["preset=child", "optim.warmup_steps=3"], root=tmp_path).optim.warmup_steps == 3
    (tmp_path / "preset" / "base.yaml").write_text("preset: child\n")
    with pytest.raises(ConfigError, match="cycle: child -> base -> child"):
        compose(["preset=child"], root=tmp_path)
    # the shipped demo preset is the small-corpus preset on the CPU demo trainer, with global
    # normalisation (its figures were measured so); a nested key of a base preset is overridden alone
    demo, small = compose(["preset=demo"]), compose(["preset=small_corpus"])
    assert demo.trainer.name == "demo" and {k: demo[k] for k in ("encoder", "optim")} == {
        k: small[k] for k in ("encoder", "optim")}
    assert (demo.data.features.normalization, small.data.features.normalization) == ("global", "utterance")
    demo.data.features.normalization = "utterance"
    assert demo.data == small.data


def test_preset_errors_name_the_preset_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown choice preset='nope'; valid choices: .*demo"):
        compose(["preset=nope"])
    conf = tmp_path / "conf"
    import shutil

    from asr_zoo.config import conf_dir

    shutil.copytree(conf_dir(), conf)
    (conf / "preset" / "bad.yaml").write_text("data: {tokeniser: {type: char}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*tokeniser.*valid keys"):
        compose(["preset=bad"], root=conf)


def test_shipped_presets_compose_with_every_objective():
    for preset in group_choices("preset"):
        for objective in group_choices("objective"):
            cfg = compose([f"preset={preset}", f"objective={objective}", "objective.expert=x"]
                          if objective.startswith("imputer") else [f"preset={preset}", f"objective={objective}"])
            assert cfg.objective.name == objective
