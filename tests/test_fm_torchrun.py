"""DDP under torchrun itself: `torchrun --standalone --nproc_per_node 2 payfm fm pretrain` (gloo, CPU) trains
the same weights as one process (the mp.spawn test in test_fm_pretrain covers the library path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from payfm.events.workspace import Workspace
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

CFG = PretrainConfig(
    seq_len=5, n_layer=1, n_head=2, n_embd=16, batch_size=32, steps=6, max_charges=2000, seed=4
)
ARGS = ["--seq-len", "5", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "32"]


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=5, seed=5)), "replace")
    single = pretrain(ws, CFG, out=tmp_path / "single")
    bin_dir = Path(sys.executable).parent
    cmd = [
        str(bin_dir / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(bin_dir / "payfm"),
        "-w",
        str(ws.root),
        "fm",
        "--threads",
        "1",
        "pretrain",
        *ARGS,
        "--steps",
        "6",
        "--max-charges",
        "2000",
        "--seed",
        "4",
        "--until-frac",
        "1",
        "--name",
        "ddp",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pretrained to step 6" in done.stdout
    ddp = ws.root / "fm" / "ddp"
    a, b = load_file(single.path / "model.safetensors"), load_file(ddp / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    # AdamW's weights hardly move with the gradients' scale in 6 steps; its moments do (the first linearly):
    # a DDP loss normalised wrongly (gradients x2 or /2) leaves the weights within 1e-4 and these far apart
    oa, ob = load_file(single.path / "optimizer.safetensors"), load_file(ddp / "optimizer.safetensors")
    moments = [k for k in oa if k.endswith(("exp_avg", "exp_avg_sq"))]
    assert moments and oa.keys() == ob.keys()
    for k in moments:
        assert float((oa[k] - ob[k]).norm() / oa[k].norm()) < 1e-2, k
    # both ranks trained: rank 0 recorded its share of each step's loss, not the single-process loss
    meta = json.loads((ddp / "config.json").read_text())
    assert meta["step"] == 6 and len(meta["losses"]) == 6
    assert any(abs(x - y) > 1e-3 for x, y in zip(meta["losses"], single.losses, strict=True))
