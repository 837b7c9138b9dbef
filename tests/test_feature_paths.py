"""Feature archives are found through ``data.root``, not the working directory of ``prepare``:
a corpus prepared with a relative --out is usable from anywhere, and moving it keeps it usable
(before, a relative path could silently open a same-named archive of another corpus)."""

import gzip
import json
import shutil

from asr_zoo.cli import main
from asr_zoo.config import compose
from asr_zoo.data.prepare import PreparedData


def test_corpus_prepared_with_relative_out_loads_from_elsewhere_and_after_a_move(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["prepare", "synth", "--out", "data/c", "--num-train", "6", "--num-dev", "2", "--num-test", "2",
                 "--workers", "1"]) == 0
    data = PreparedData(compose(["data.root=data/c"]).data)
    expected = {c.id: c.load_features() for c in data.features("dev")}
    with gzip.open(work / "data/c/fbank80/dev_cuts.jsonl.gz", "rt") as f:
        stored = {json.loads(line)["features"]["storage_path"] for line in f}
    assert stored and all(p.startswith("fbank80/dev_feats") for p in stored)  # relative to the data root

    moved = tmp_path / "elsewhere" / "corpus"
    shutil.move(str(work / "data/c"), moved)
    (work / "data").rmdir()
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    cuts = PreparedData(compose([f"data.root={moved}"]).data).features("dev")
    for cut in cuts:
        assert cut.features.storage_path.startswith(str(moved))
        assert (cut.load_features() == expected[cut.id]).all()
