"""Checkpoint files: atomic round trip, and a clear CheckpointError (naming the file) for every bad file."""

import pickle

import pytest
import torch

from otsr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_through_a_folder(tmp_path):
    state = {"map": {"w": torch.arange(4.0)}, "critic": {}, "step": 7, "config": {"method": "ots"},
             "pair": {"name": "gaussian-shift", "params": {}}}
    path = save_checkpoint(state, tmp_path)
    assert path.parent == tmp_path and not list(tmp_path.glob(".*tmp*"))
    back = load_checkpoint(tmp_path)
    assert back["step"] == 7 and torch.equal(back["map"]["w"], torch.arange(4.0))


class _Evil:
    def __reduce__(self):
        return (print, ("this would run",))


@pytest.mark.parametrize("content,match", [
    (b"", "empty|truncated|not a checkpoint"),
    (b"garbage bytes", "not a checkpoint|truncated|corrupt"),
    (None, "no checkpoint at"),
])
def test_bad_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_a_code_carrying_file_is_refused_and_says_why(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "x": _Evil()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="code") as e:
        load_checkpoint(path)
    assert "weights_only=False" not in str(e.value)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint({"map": {"w": torch.randn(1000)}, "step": 1}, tmp_path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
