"""Benchmarks behind ``asr-zoo bench NAME``: each module has ``add_arguments(parser)`` and ``run(args)``."""


def write_records(out, name: str, records: list[dict], table: str) -> None:
    """``out/<name>.jsonl`` (one record per line) and ``out/<name>.md`` (``table``), the raw
    figures and the table every benchmark leaves beside its plot."""
    import json
    from pathlib import Path

    out = Path(out)
    with open(out / f"{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    (out / f"{name}.md").write_text(table)
