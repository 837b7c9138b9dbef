"""The package's structure: imports run one way, and adding an objective or an attention type
touches exactly the places CONTRIBUTING.md lists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import asr_zoo

PACKAGE = Path(asr_zoo.__file__).parent
CONF = PACKAGE.parents[1] / "conf"

# The data flow, bottom to top: a module may import from its own layer or any layer below.
LAYERS = [
    {"utils", "registry", "hardware", "tensors", "timing"},
    {"config", "schemas"},
    {"data"},
    {"nn"},
    {"losses"},
    {"decoding"},
    {"align"},
    {"report"},
    {"objectives"},
    {"train", "evaluate", "sweep", "aligner", "average", "ema"},
    {"cli", "bench", "__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``asr_zoo`` module imported by ``path`` (relative imports resolved), with its line;
    imports inside functions count too."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(t, line) for t, line in found if t == "asr_zoo" or t.startswith("asr_zoo.")]


def test_every_module_belongs_to_a_layer():
    unknown = sorted({_layer(_module_name(p)) for p in PACKAGE.rglob("*.py")} - set(RANK))
    assert not unknown, f"modules outside the layer map (add them to LAYERS): {unknown}"


def test_imports_run_one_way():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _layer(_module_name(path))
        for target, line in _imports(path):
            there = _layer(target)
            if RANK.get(there, -1) > RANK[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a config module importing objectives is reported."""
    fake = tmp_path / "asr_zoo"
    fake.mkdir()
    (fake / "config.py").write_text("from .objectives import OBJECTIVES\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="config.py:1 .config. imports asr_zoo.objectives"):
        test_imports_run_one_way()


def test_composing_a_config_loads_no_model_code():
    """config is the second layer: composing loads neither Lightning nor the zoo's modules."""
    import subprocess
    import sys

    code = ("import sys; from asr_zoo.config import compose; compose(['objective=rnnt', 'attention=clustered']); "
            "print(sorted(m for m in sys.modules if m.startswith(('lightning', 'asr_zoo.nn', 'asr_zoo.objectives'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ what adding a type touches
def _registered(kind: str) -> set[str]:
    if kind == "attention":
        from asr_zoo.nn.attention import ATTENTION as registry
    else:
        from asr_zoo.objectives import OBJECTIVES as registry
    return set(registry.names())


@pytest.mark.parametrize("kind", ["attention", "objective"])
def test_every_registered_type_has_a_config_file_and_a_schema(kind):
    """CONTRIBUTING.md: a new type is registered (with its schema) and gets conf/<kind>/<name>.yaml."""
    from asr_zoo.config import GROUPS, group_choices

    names = _registered(kind)
    files = {p.stem: p for p in (CONF / kind).glob("*.yaml")}
    assert names <= set(files), f"registered {kind} types without conf/{kind}/<name>.yaml: {names - set(files)}"
    for choice in group_choices(kind):
        assert GROUPS[kind](choice) is not None
    contributing = (PACKAGE.parents[1] / "CONTRIBUTING.md").read_text()
    assert f"Adding an {kind if kind == 'objective' else 'attention type'}" in contributing


def _choices(schema, name: str) -> set:
    from dataclasses import fields

    return set(next(f for f in fields(schema) if f.name == name).metadata["choices"])


def test_schema_choices_match_the_implementations():
    """Choices are declared once, in the schema; the code that implements them must agree."""
    from asr_zoo import schemas
    from asr_zoo.align.rollin import MASKING_POLICIES
    from asr_zoo.decoding.imputer import DECODING_STRATEGIES
    from asr_zoo.losses.rnnt import BACKENDS
    from asr_zoo.nn.attention import ATTENTION
    from asr_zoo.nn.decoder import CAUSAL_DECODER_ATTENTION
    from asr_zoo.objectives import OBJECTIVES

    assert _choices(schemas.ImputerConfig, "masking") == set(MASKING_POLICIES)
    assert _choices(schemas.ImputerConfig, "decode_strategy") == set(DECODING_STRATEGIES)
    assert _choices(schemas.RNNTConfig, "loss_backend") == set(BACKENDS)
    assert _choices(schemas.Seq2SeqConfig, "decoder_attention") == set(CAUSAL_DECODER_ATTENTION)
    for registry, table in ((ATTENTION, schemas.ATTENTION_SCHEMAS), (OBJECTIVES, schemas.OBJECTIVE_SCHEMAS)):
        assert set(registry.names()) == set(table)
        assert all(registry.get(name).config is table[name] for name in table)


def test_hand_written_lists_match_the_registries():
    """The README's list of choices and the sweeps over every attention type / objective name
    exactly what the registries hold: adding a type without them fails here."""
    import re

    import yaml

    from asr_zoo.config import GROUPS, group_choices

    readme = " ".join((PACKAGE.parents[1] / "README.md").read_text().split())
    for group in GROUPS:
        listed = re.search(rf"`{group}` \(([^)]*)\)", readme)
        assert listed, f"README lists no choices of {group}"
        assert set(listed.group(1).replace(" ", "").split(",")) == set(group_choices(group)), group
    for sweep in sorted((CONF / "sweeps").glob("objectives_x_attention*.yaml")):
        values = yaml.safe_load(sweep.read_text())["parameters"]["attention"]["values"]
        assert set(values) == _registered("attention"), sweep.name
