"""ipv2.io.relocate: paths written inside a folder built under a temporary name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ipv2.io.relocate import repoint_paths


def test_paths_inside_text_files_follow_the_rename_and_binaries_are_untouched(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / ".out.partial-abc", tmp_path / "out"
    new.mkdir()
    (new / "run").mkdir()
    config = {
        "data": str(old / "dataset"),
        "nested": [{"teacher": str(old / "model/final")}],
        "n": 3,
    }
    (new / "run" / "config.json").write_text(json.dumps(config))
    (new / "events.jsonl").write_text(json.dumps({"message": f"wrote {old}/a.npy"}) + "\n")
    (new / "pairs.csv").write_text(f"case,uldct\nc0,{old}/u.nrrd\n")
    (new / "untouched.json").write_text(json.dumps({"data": "/elsewhere/dataset"}))
    array = np.frombuffer(str(old).encode(), dtype=np.uint8)
    np.save(new / "blob.npy", array)

    changed = repoint_paths(new, old, new)
    assert sorted(p.name for p in changed) == ["config.json", "events.jsonl", "pairs.csv"]
    moved = json.loads((new / "run" / "config.json").read_text())
    assert moved == {
        "data": str(new / "dataset"),
        "nested": [{"teacher": str(new / "model/final")}],
        "n": 3,
    }
    assert str(new / "a.npy") in (new / "events.jsonl").read_text()
    assert f"c0,{new}/u.nrrd" in (new / "pairs.csv").read_text()
    assert json.loads((new / "untouched.json").read_text()) == {"data": "/elsewhere/dataset"}
    assert np.array_equal(np.load(new / "blob.npy"), array)  # binary: never rewritten


def test_windows_style_paths_are_replaced_in_their_json_escaped_form(tmp_path: Path) -> None:
    old, new = Path("C:\\work\\.out.partial-x"), Path("C:\\work\\out")
    (tmp_path / "config.json").write_text(json.dumps({"data": "C:\\work\\.out.partial-x\\ds"}))
    assert repoint_paths(tmp_path, old, new) == [tmp_path / "config.json"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"data": "C:\\work\\out\\ds"}
