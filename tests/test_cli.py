"""The `ttt-infer` command line, end to end on tiny models."""

import json
import os
import subprocess
import sys

import pytest
import torch
from _models import VOCAB, tiny_model

from ttt_infer import save_pretrained
from ttt_infer.cli import main


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "generate" in out and "env" in out


def test_env_json(capsys, monkeypatch):
    for k in [k for k in os.environ if k.startswith("TTT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("TTT_INFER_PDL", "0")  # a setting: recorded with the results it made
    monkeypatch.setenv("TTT_INFER_GIT_SHA", "abc123")  # a stamp, not a setting
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] == torch.__version__ and "tk_commit" in env and env["git_sha"] == "abc123"
    assert env["settings"] == {"TTT_INFER_PDL": "0"}


def test_generate_from_checkpoint_is_greedy_continuation(tmp_path, capsys):
    model = tiny_model("mlp", "mamba", dtype=torch.float32)
    save_pretrained(model, tmp_path)
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(tmp_path),
                "--prompt-ids",
                "3,1,4,1,5",
                "--max-new-tokens",
                "6",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    rows = [list(map(int, line.split())) for line in capsys.readouterr().out.strip().splitlines()]
    want = model.generate(torch.tensor([[3, 1, 4, 1, 5]] * 2), 6).tolist()
    assert rows == want


def test_generate_random_init_entry_point():
    """The installed console script path: python -m ttt_infer.cli with a random-init standard config."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttt_infer.cli",
            "generate",
            "--config",
            "125m",
            "--random-init",
            "--num-layers",
            "1",
            "--prompt-len",
            "17",
            "--max-new-tokens",
            "3",
            "--layer-type",
            "mlp",
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = out.stdout.strip().splitlines()
    assert len(rows) == 2 and all(len(r.split()) == 20 for r in rows)


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    save_pretrained(tiny_model(dtype=torch.float32), tmp_path)
    with pytest.raises(SystemExit, match="token ids"):
        main(["generate", "--checkpoint", str(tmp_path), "--prompt-ids", f"1,{VOCAB}"])
    with pytest.raises(SystemExit, match="random-init"):
        main(["generate", "--config", "125m"])
    with pytest.raises(SystemExit):
        main(["generate", "--config", "125m", "--random-init", "--dtype", "fp8"])
