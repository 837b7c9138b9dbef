"""Composed configuration: ``conf/`` groups and command-line overrides validated against the
typed defaults of :mod:`asr_zoo.schemas`.

A run's config is composed from ``conf/config.yaml`` (top-level defaults and the default choice
of every group) plus one YAML per group (``conf/<group>/<choice>.yaml``), then command-line
overrides: ``group=choice`` picks a file, ``dotted.key=value`` sets a value, ``preset=NAME`` applies
``conf/preset/NAME.yaml`` (a bundle of group choices and values across groups, e.g. what a small
corpus needs; explicit group choices and dotted overrides on the command line win over it, later
presets over earlier ones). Every layer is merged
into the group's dataclass schema, so a typo fails fast with the key's name and the valid keys,
and a wrong choice fails with the valid choices.

>>> cfg = compose(["objective=ctc", "trainer.max_steps=5"])
>>> cfg.trainer.max_steps, cfg.objective.name
(5, 'ctc')
"""

from __future__ import annotations

import os
from dataclasses import MISSING as MISSING_FACTORY, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schemas import ATTENTION_SCHEMAS, OBJECTIVE_SCHEMAS, DataConfig, EncoderConfig, RunConfig, TrainerConfig

__all__ = [
    "ConfigError", "GROUPS", "compose", "flatten", "config_differences", "RESULT_NEUTRAL_KEYS",
    "RESUMABLE_KEYS", "fill_placeholders", "conf_dir", "group_choices", "save_config", "load_config",
]


class ConfigError(ValueError):
    """A config key, value or choice is invalid; the message names it and the valid options."""


def _schema(kind: str, table: dict[str, type]):
    def lookup(name: str) -> type:
        if name not in table:
            raise KeyError(f"unknown {kind} {name!r}; valid choices: {', '.join(table)}")
        return table[name]

    return lookup


# Group name -> function returning the schema for a given YAML (choice-specific for some groups).
GROUPS: dict[str, Any] = {
    "data": lambda name: DataConfig,
    "encoder": lambda name: EncoderConfig,
    "attention": _schema("attention type", ATTENTION_SCHEMAS),
    "objective": _schema("objective", OBJECTIVE_SCHEMAS),
    "trainer": lambda name: TrainerConfig,
}


PRESET = "preset"  # `preset=NAME`: conf/preset/NAME.yaml, a bundle of choices and values across groups

# ----------------------------------------------------------------------------------- composing
def conf_dir() -> Path:
    """The ``conf/`` directory: $ASR_ZOO_CONF, the copy inside the installed package, or the repo's."""
    if os.environ.get("ASR_ZOO_CONF"):
        return Path(os.environ["ASR_ZOO_CONF"])
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parents[1] / "conf"):
        if (cand / "config.yaml").exists():
            return cand
    raise ConfigError(f"cannot find the conf/ directory (looked in {here / 'conf'}, {here.parents[1] / 'conf'})")


def group_choices(group: str, root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((root or conf_dir()) / group).glob("*.yaml"))


def _valid_keys(schema) -> list[str]:
    return [f.name for f in fields(schema)]


def _merge(base: DictConfig, layer: Any, where: str) -> DictConfig:
    """Merge ``layer`` into the struct-mode ``base``; unknown keys / bad types raise ConfigError."""
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
        parent = key.rsplit(".", 1)[0] if "." in str(key) else None
        node = OmegaConf.select(base, parent) if parent else base
        valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        raise ConfigError(f"{where}: invalid key or value {key!r} ({e.msg.splitlines()[0]}){hint}") from None


def _load_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml syntax errors
        raise ConfigError(f"{path}: cannot parse YAML: {e}") from None


def _parse_value(raw: str) -> Any:
    """Parse a command-line value with YAML rules (numbers, booleans, lists, null)."""
    import yaml

    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def compose(overrides: list[str] | tuple[str, ...] = (), root: Path | None = None,
            base: DictConfig | None = None) -> DictConfig:
    """Compose and validate a run config.

    Args:
        overrides: ``group=choice`` and ``dotted.key=value`` strings, applied in order after the
            group choices.
        root: the conf directory (default :func:`conf_dir`).
        base: start from this resolved config instead of ``conf/config.yaml`` (used to apply
            evaluation-time overrides to a saved run config); ``group=choice`` then replaces
            that group entirely.

    Returns:
        DictConfig: the validated config in struct mode (unknown keys raise).
    """
    root = root or conf_dir()
    group_sel, dotted = {}, []
    preset_sel, preset_dotted = {}, []
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value or group=choice")
        key, raw = ov.split("=", 1)
        if key == PRESET:
            choices, values = _load_preset(root, raw)
            preset_sel.update(choices)
            preset_dotted.extend(values)
        elif key in GROUPS:
            group_sel[key] = raw
        elif "." in key or key in _valid_keys(RunConfig):
            dotted.append((key, _parse_value(raw), f"override {key}={raw}"))
        else:
            raise ConfigError(
                f"unknown config key {key!r}; valid groups: {', '.join(GROUPS)}; "
                f"valid top-level keys: {', '.join(_valid_keys(RunConfig))}; or {PRESET}=NAME"
            )
    group_sel = {**preset_sel, **group_sel}
    dotted = preset_dotted + dotted

    if base is None:
        top = _load_yaml(root / "config.yaml")
        defaults = dict(top.pop("defaults", {}))
        missing = [g for g in GROUPS if g not in defaults and g not in group_sel]
        if missing:
            raise ConfigError(f"{root / 'config.yaml'}: no default choice for group(s) {missing}")
        cfg = _merge(OmegaConf.structured(RunConfig), top, str(root / "config.yaml"))
        OmegaConf.set_struct(cfg, False)
        selections = {g: group_sel.get(g, defaults.get(g)) for g in GROUPS}
    else:
        cfg = base.copy()
        OmegaConf.set_struct(cfg, False)
        selections = group_sel

    for group, choice in selections.items():
        path = root / group / f"{choice}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown choice {group}={choice!r}; valid choices: {', '.join(group_choices(group, root))}"
            )
        layer = _load_yaml(path)
        name = layer.get("name", choice)
        try:
            schema = GROUPS[group](name)
        except KeyError as e:
            raise ConfigError(f"{path}: {e.args[0]}") from None
        node = OmegaConf.structured(schema)
        cfg[group] = _merge(node, layer, str(path))

    OmegaConf.set_struct(cfg, True)
    for key, value, where in dotted:
        group = key.split(".", 1)[0]
        if group not in cfg:
            raise ConfigError(f"{where}: unknown config key {key!r}; valid top-level keys: {', '.join(cfg.keys())}")
        layer = OmegaConf.from_dotlist([])
        OmegaConf.update(layer, key, value, force_add=True)
        cfg = _merge(cfg, layer, where)
    _check_values(cfg)
    return cfg


def _load_preset(root: Path, name: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, str], list[tuple[str, Any, str]]]:
    """``conf/preset/<name>.yaml`` as (group choices, [(dotted key, value, where)]).

    A top-level key naming a group with a string value picks that group's choice
    (``encoder: conformer``); anything else is a value, nested or dotted (``data: {tokenizer: {type:
    char}}`` or ``data.tokenizer.type: char``), checked against the schemas when merged.
    ``preset: OTHER`` starts from another preset, which this file's choices and values override.
    """
    path = root / PRESET / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown choice {PRESET}={name!r}; valid choices: {', '.join(group_choices(PRESET, root))}")
    if name in seen:
        raise ConfigError(f"{path}: presets include each other in a cycle: {' -> '.join((*seen, name))}")
    choices, values = {}, []
    content = OmegaConf.to_container(_load_yaml(path), resolve=True)
    if PRESET in content:
        choices, values = _load_preset(root, str(content.pop(PRESET)), (*seen, name))
    for key, value in content.items():
        if key in GROUPS and isinstance(value, str):
            choices[key] = value
        else:
            flat = flatten(value, f"{key}.") if isinstance(value, dict) else {key: value}
            values += [(k, v, f"{path}: {k}") for k, v in flat.items()]
    return choices, values


def _check_values(cfg: DictConfig) -> None:
    """Every ``choice``/``bounded`` field of every group's schema, with the key in the message."""
    _check_schema(cfg, RunConfig, "")
    for group, schema_of in GROUPS.items():
        _check_schema(cfg[group], schema_of(cfg[group].name), f"{group}.")
    e, a = cfg.encoder, cfg.attention
    if e.d_model % e.num_heads:
        raise ConfigError(f"encoder.d_model={e.d_model} must be divisible by encoder.num_heads={e.num_heads}")
    if e.block == "conformer" and not e.pre_ln:
        raise ConfigError("encoder.pre_ln=false needs encoder.block=transformer (Conformer blocks are always pre-LN)")
    if a.name == "linear" and a.dropout > 0:
        raise ConfigError(f"attention.dropout={a.dropout} has no effect on linear attention (it forms no weights); "
                          "use encoder.dropout")


def _check_schema(node: DictConfig, schema, prefix: str) -> None:
    for f in fields(schema):
        if f.name not in node:
            continue
        value, key = node[f.name], prefix + f.name
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"invalid value {key}={value!r}; valid choices: {', '.join(map(str, f.metadata['choices']))}")
        if "range" in f.metadata and value is not None:  # None: an optional number left unset
            low, high, high_open = f.metadata["range"]
            if (low is not None and value < low) or (high is not None and (value >= high if high_open else value > high)):
                interval = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}{')' if high_open else ']'}"
                raise ConfigError(f"invalid value {key}={value!r}; must be in {interval}")
        if f.default_factory is not MISSING_FACTORY and is_dataclass(f.default_factory()):
            _check_schema(value, type(f.default_factory()), key + ".")


# ----------------------------------------------------------------------------------- comparing
# Keys that never change what a run computes: a resumed or finished run may differ in them.
RESULT_NEUTRAL_KEYS = ("run_dir", "trainer.num_threads", "trainer.progress_bar", "trainer.log_every_n_steps",
                       "trainer.wandb", "trainer.wandb_project", "trainer.name", "data.num_workers",
                       "data.root")
# Keys an unfinished run may change when it resumes: its budget and the hardware it runs on.
RESUMABLE_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.accelerator",
                  "trainer.devices", "trainer.num_nodes", "trainer.strategy")


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts -> ``{dotted.key: value}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: DictConfig, new: DictConfig, allowed: tuple[str, ...] = RESULT_NEUTRAL_KEYS) -> list[str]:
    """Dotted keys whose values differ (``key: old -> new``), the ``allowed`` ones left out."""
    a = flatten(OmegaConf.to_container(old, resolve=True))
    b = flatten(OmegaConf.to_container(new, resolve=True))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(allowed)]


def fill_placeholders(text: str, cfg: DictConfig) -> str:
    """``text`` with ``{objective}``, ``{attention}``, ``{encoder}``, ``{data}``, ``{trainer}`` and
    ``{seed}`` of ``cfg`` filled in (the presets' names): run directories and paths to other runs
    (``objective.expert=runs/ctc-s{seed}``) written once for every seed of a sweep."""
    return text.format(objective=cfg.objective.name, attention=cfg.attention.name, encoder=cfg.encoder.name,
                       data=cfg.data.name, trainer=cfg.trainer.name, seed=cfg.seed)


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config atomically."""
    from .utils import atomic_write_text

    atomic_write_text(Path(path), OmegaConf.to_yaml(cfg, resolve=True))


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load a saved run config (re-validated against the schemas) and apply overrides."""
    saved = _load_yaml(Path(path))
    if "block" not in saved.get("encoder", {}):  # saved before encoder.block existed: name was the block
        saved.encoder.block = saved.encoder.name
    # Rebuild every group from its schema so that saved configs are validated too.
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, False)
    for group, schema_of in GROUPS.items():
        cfg[group] = _merge(OmegaConf.structured(schema_of(saved[group]["name"])), saved[group], f"{path}:{group}")
    top = {k: v for k, v in saved.items() if k not in GROUPS}
    cfg = _merge(cfg, top, str(path))
    OmegaConf.set_struct(cfg, True)
    return compose(overrides, base=cfg) if overrides else cfg
