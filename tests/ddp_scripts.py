"""Scripts the DDP tests run in subprocesses (Lightning's ``ddp`` re-executes ``sys.argv``, so
DDP is launched from a script, never from inside pytest).

    python tests/ddp_scripts.py parity ROOT OUT.json      # gradients: 1 process x 2k vs 2 x k
    python tests/ddp_scripts.py validate RUN N OUT.json   # dev WER of last.ckpt on N processes
"""

from __future__ import annotations

import datetime
import faulthandler
import json
import os
import sys
from pathlib import Path

import torch

K = 3  # utterances per rank in the parity check
PARITY_OVERRIDES = ["data.tokenizer.vocab_size=40", "encoder.d_model=32", "encoder.num_layers=2", "encoder.ffn_dim=64",
                    "encoder.frontend_channels=8", "encoder.dropout=0.0", "data.num_workers=0", "objective=ctc"]


def _parity_batches(root: str):
    """The model (float64, no dropout), the fixed batch of 2K training utterances, whole and
    split in two halves of K (no SpecAugment: the eval dataset), and the model's build args."""
    from lhotse import CutSet

    from asr_zoo.config import compose
    from asr_zoo.data.datamodule import ASRDataModule
    from asr_zoo.objectives import build_module

    cfg = compose([f"data.root={root}", *PARITY_OVERRIDES])
    dm = ASRDataModule(cfg.data, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    cuts = list(dm.train_cuts)[: 2 * K]
    batch = lambda cs: {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v  # noqa: E731
                        for k, v in dm.eval_set[CutSet.from_cuts(cs)].items()}
    torch.manual_seed(0)
    model = build_module(cfg, dm.tokenizer.vocab_size, dm.feature_dim).double().train()
    return model, batch(cuts), [batch(cuts[:K]), batch(cuts[K:])], (root, dm.tokenizer.vocab_size, dm.feature_dim)


def _parity_rank(rank: int, init: str, out: str) -> None:
    faulthandler.dump_traceback_later(90, exit=True)  # a stall anywhere else: its stack on stderr, then exit
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from asr_zoo.config import compose
    from asr_zoo.objectives import build_module

    # a bounded wait: a rendezvous or collective that stalls fails the attempt instead of hanging
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=45))
    torch.set_num_threads(1)
    state = torch.load(init)
    root, vocab, feature_dim = state["build"]
    model = build_module(compose([f"data.root={root}", *PARITY_OVERRIDES]), vocab, feature_dim).double().train()
    model.load_state_dict(state["weights"])
    halves = state["halves"]
    ddp = DDP(model)
    # the loss through DDP's forward, as Lightning's training_step is reached
    loss = _ddp_loss(ddp, halves[rank])
    loss.backward()  # DDP all-reduces (averages) the gradients here
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        torch.save({"loss": mean_loss / 2, "grads": {n: p.grad for n, p in model.named_parameters()}}, out)
    dist.destroy_process_group()


def _ddp_loss(ddp, batch):
    """``compute_loss`` called through DDP's forward (so its gradient hooks are armed)."""
    module = ddp.module
    original = module.forward
    module.forward = lambda b: module.compute_loss(b)[0]
    try:
        return ddp(batch)
    finally:
        module.forward = original


def parity(root: str, out: str) -> None:
    import tempfile

    import torch.multiprocessing as mp

    torch.set_num_threads(2)
    model, full, halves, build = _parity_batches(root)
    with tempfile.TemporaryDirectory() as tmp:
        init, two = os.path.join(tmp, "init.pt"), os.path.join(tmp, "two.pt")
        torch.save({"weights": model.state_dict(), "halves": halves, "build": build}, init)
        loss = model.compute_loss(full)[0]
        loss.backward()
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("PARITY_PORT", "29533"))
        mp.spawn(_parity_rank, args=(init, two), nprocs=2, join=True)  # (fork hangs after the parent's OpenMP use)
        ddp = torch.load(two)
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n in grads if (grads[n] is None) != (ddp["grads"][n] is None)]
    diffs = {n: float((grads[n] - ddp["grads"][n]).abs().max()) for n in grads if grads[n] is not None}
    scale = max(float(g.abs().max()) for g in grads.values() if g is not None)
    Path(out).write_text(json.dumps({
        "utterances": 2 * K, "loss_1proc": float(loss.detach()), "loss_2proc": float(ddp["loss"]),
        "loss_abs_diff": abs(float(loss.detach()) - float(ddp["loss"])), "max_grad_abs_diff": max(diffs.values()),
        "max_grad_abs": scale, "params": len(diffs), "missing": missing, "dtype": "float64",
        "cpu_capability": torch.backends.cpu.get_cpu_capability()}, indent=1))


def validate(run: str, devices: int, out: str) -> None:
    """``trainer.validate`` of ``RUN/checkpoints/last.ckpt`` on the run's dev split (its first 7
    utterances: shards of unequal size) with ``devices`` CPU processes."""
    import lightning as L

    from asr_zoo.data.datamodule import ASRDataModule
    from asr_zoo.objectives import load_run

    torch.set_num_threads(1)
    module, cfg = load_run(Path(run), checkpoint="last")
    dm = ASRDataModule(cfg.data, seed=cfg.seed, val_max_utts=7)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, enable_checkpointing=False)
    seen = []
    original = module.validation_step

    def step(batch, batch_idx):
        seen.extend(batch["ids"])
        return original(batch, batch_idx)

    module.validation_step = step
    result = trainer.validate(module, datamodule=dm, verbose=False)[0]
    Path(f"{out}.rank{trainer.global_rank}").write_text(json.dumps(seen))
    if trainer.global_rank == 0:
        Path(out).write_text(json.dumps({"wer": float(result["val/wer"]), "devices": devices}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "parity":
        parity(*args)
    elif cmd == "validate":
        validate(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(__doc__)
