"""One cell = (architecture, fold, seed) -> artefacts: metrics.json, history.csv, oof.npz, model.pt.

The whole dataset lives on the device as uint8; a batch is an index gather; augmentation is batched on
the device from a generator seeded by (seed, fold, epoch). After every epoch a checkpoint is written
atomically, so a killed cell resumes at the last finished epoch and ends with the same result.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

import architectures
from bench import io as bio
from bench import losses
from bench.augment import augment, make_generator, stream_seed
from bench.config import Config, protocol_hash
from bench.inference import autocast, from_network, predict_probs, to_network
from bench.metrics import iou, tgs_precision

INIT, EPOCH = 1, 2  # stream tags: model initialisation vs. per-epoch batch stream


@dataclass(frozen=True)
class Cell:
    arch: str
    fold: int
    seed: int

    @property
    def name(self) -> str:
        return f"fold{self.fold}-seed{self.seed}"

    def dir(self, run_dir: Path) -> Path:
        return Path(run_dir) / "cells" / self.arch / self.name

    def is_done(self, run_dir: Path) -> bool:
        return (self.dir(run_dir) / "metrics.json").is_file()


@dataclass
class DeviceData:
    """Train images and masks as (N,1,101,101) uint8 tensors on the training device."""

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    mean: float
    std: float

    @classmethod
    def from_arrays(cls, ids: list[str], images: np.ndarray, masks: np.ndarray, device: torch.device) -> "DeviceData":
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1).to(device)
        y = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)).unsqueeze(1).to(device)
        pixels = images.astype(np.float64) / 255.0
        return cls(list(ids), x, y, float(pixels.mean()), float(max(pixels.std(), 1e-3)))


BatchHook = Callable[[int, torch.Tensor, torch.Tensor], None]
EpochHook = Callable[[int, float], None]


def batch_stream(
    cfg: Config, data: DeviceData, train_idx: torch.Tensor, seed: int, fold: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented (x in [0,1], y in {0,1}) float batches of one epoch; depends on (seed, fold, epoch) only."""
    p = cfg.protocol
    gen = make_generator(data.images.device, seed, fold, epoch, EPOCH)
    order = train_idx[torch.randperm(len(train_idx), generator=gen, device=data.images.device)]
    bs = min(p.batch_size, len(order))
    n_batches = len(order) // bs  # drop the ragged tail: BatchNorm needs more than one sample
    for b in range(n_batches):
        idx = order[b * bs : (b + 1) * bs]
        x = data.images[idx].float() / 255.0
        y = data.masks[idx].float()
        yield augment(x, y, p.augment, gen)


def _optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.protocol.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _scheduler(cfg: Config, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    s, epochs = cfg.protocol.scheduler, cfg.protocol.epochs
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=s.factor, patience=s.patience)
    warmup = s.warmup_epochs * steps_per_epoch
    total = max(epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if s.name == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Trainer:
    """Model, optimiser, schedule and loss of one cell; ``step`` is the harness's training step."""

    def __init__(self, cfg: Config, cell: Cell, data: DeviceData, steps_per_epoch: int):
        self.cfg, self.cell, self.data = cfg, cell, data
        self.device = data.images.device
        torch.manual_seed(stream_seed(cell.seed, INIT))
        self.model = architectures.create(cell.arch, in_channels=1, classes=1, **cfg.arch_kwargs(cell.arch)).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if cfg.runtime.compile else self.model
        self.optimizer = _optimizer(cfg, self.model)
        self.scheduler = _scheduler(cfg, self.optimizer, steps_per_epoch)
        loss = cfg.protocol.loss
        self.loss = losses.StagedLoss(loss.first, loss.then, loss.switch_epoch).to(self.device)
        self.size = tuple(data.images.shape[-2:])

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """Forward, loss on the 101x101 crop, backward, optimiser and per-step schedule. Returns the loss."""
        p = self.cfg.protocol
        xin = to_network((x - self.data.mean) / self.data.std, p.input)
        if self.device.type == "cuda":
            xin = xin.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            logits = self.forward(xin)
        logits = from_network(logits.float(), p.input, self.size)
        loss = self.loss.at(epoch)(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.grad_clip)
        self.optimizer.step()
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _quantise(probs: torch.Tensor) -> np.ndarray:
    """Probabilities as uint8 (p * 255, rounded): 101x101 per image, a quarter of float32."""
    return (probs.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def train_cell(
    cfg: Config,
    cell: Cell,
    data: DeviceData,
    folds: np.ndarray,
    out_dir: Path,
    *,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one cell and write its artefacts to ``out_dir``; resumes from ``checkpoint.pt`` if present.

    ``on_batch(epoch, x, y)`` sees every augmented batch (tests hash them); ``on_epoch(epoch, score)``
    sees every validation score and may raise to stop the cell (Optuna pruning).
    """
    from tqdm.auto import tqdm

    phash = protocol_hash(cfg)  # the shared protocol; the arch's own recipe is recorded beside it
    arch_train = cfg.arch_train(cell.arch)
    cfg = cfg.for_arch(cell.arch)
    p, device = cfg.protocol, data.images.device
    out_dir = Path(out_dir)
    fold_t = torch.as_tensor(folds, device=device)
    train_idx = torch.nonzero(fold_t != cell.fold).flatten()
    val_idx = torch.nonzero(fold_t == cell.fold).flatten()
    steps = max(len(train_idx) // min(p.batch_size, len(train_idx)), 1)
    trainer = Trainer(cfg, cell, data, steps)
    val_images = data.images[val_idx]
    val_truth = data.masks[val_idx, 0].bool().cpu().numpy()

    history: list[dict[str, Any]] = []
    best = {"score": -1.0, "epoch": -1, "state": None}
    start_epoch, stop_reason, train_time, train_images = 0, "completed all epochs", 0.0, 0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["protocol_hash"] == phash:
            trainer.load_state(ckpt["trainer"])
            history, best = ckpt["history"], ckpt["best"]
            start_epoch, train_time, train_images = ckpt["epoch"] + 1, ckpt["train_time"], ckpt["train_images"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_cell = time.perf_counter()

    bar = tqdm(range(start_epoch, p.epochs), desc=f"{cell.arch} {cell.name}", unit="ep", leave=False, disable=not progress)
    for epoch in bar:
        torch.manual_seed(stream_seed(cell.seed, cell.fold, epoch, INIT))  # dropout draws, epoch-resumable
        trainer.model.train()
        t0 = time.perf_counter()
        loss_sum, n_steps, finite = torch.zeros((), device=device), 0, True
        for x, y in batch_stream(cfg, data, train_idx, cell.seed, cell.fold, epoch):
            if on_batch is not None:
                on_batch(epoch, x, y)
            loss = trainer.step(x, y, epoch)
            if not torch.isfinite(loss):
                finite = False
                break
            loss_sum += loss
            n_steps += 1
            train_images += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        if not finite:
            stop_reason = f"non-finite loss at epoch {epoch} step {n_steps}"
            break
        probs, _ = predict_probs(trainer.model, val_images, p.input, data.mean, data.std, tta=False)
        pred = (probs > 0.5).cpu().numpy()
        score = float(tgs_precision(val_truth, pred).mean())
        row = {
            "epoch": epoch,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "train_loss": float(loss_sum) / max(n_steps, 1),
            "val_score": score,
            "val_iou": float(iou(val_truth, pred).mean()),
            "epoch_s": time.perf_counter() - t0,
        }
        history.append(row)
        if isinstance(trainer.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            trainer.scheduler.step(score)
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": _cpu_state(trainer.model)}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{score:.3f}", best=f"{best['score']:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, score)
        patience_over = p.early_stopping is not None and epoch - best["epoch"] >= p.early_stopping
        if patience_over:
            stop_reason = f"early stopping: no improvement for {p.early_stopping} epochs"
        ckpt = {
            "protocol_hash": phash, "trainer": trainer.state(), "history": history, "best": best,
            "epoch": epoch, "train_time": train_time, "train_images": train_images,
        }
        bio.write_bytes(ckpt_path, _to_bytes(ckpt))
        if patience_over:
            break
    bar.close()

    status = "ok" if best["state"] is not None else "diverged"
    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
        probs_tta, infer_ips = predict_probs(trainer.model, val_images, p.input, data.mean, data.std, tta=True)
        probs_plain, _ = predict_probs(trainer.model, val_images, p.input, data.mean, data.std, tta=False)
        oof_tta, oof_plain = _quantise(probs_tta), _quantise(probs_plain)
    else:  # no finished epoch: the cell predicts nothing, which the leaderboard then scores honestly
        infer_ips = float("nan")
        oof_tta = oof_plain = np.zeros((len(val_idx), *trainer.size), np.uint8)

    described = architectures.describe(trainer.model, input_size=p.input.size, in_channels=1)
    val_ids = np.array([data.ids[i] for i in val_idx.cpu().tolist()])
    metrics = {
        "arch": cell.arch, "fold": cell.fold, "seed": cell.seed, "protocol_hash": phash, "status": status,
        "stop_reason": stop_reason, "arch_kwargs": cfg.arch_kwargs(cell.arch), "arch_train": arch_train,
        "encoder": cfg.arch_kwargs(cell.arch)["encoder"],
        "params": described["params"], "macs": described["macs"], "output_stride": described["output_stride"],
        "best_epoch": best["epoch"], "epochs_run": len(history), "best_val_score": best["score"],
        "checkpoint": "model.pt holds the weights of the best epoch by validation TGS score (threshold 0.5, no TTA)",
        "train_images_per_s": train_images / max(train_time, 1e-9), "infer_images_per_s": infer_ips,
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": str(device), "dtype": "bfloat16" if device.type == "cuda" else "float32",
        "n_train": len(train_idx), "n_val": len(val_idx), "wall_s": time.perf_counter() - t_cell,
    }
    if best["state"] is not None:
        bio.write_bytes(out_dir / "model.pt", _to_bytes(best["state"]))
    bio.write_npz(out_dir / "oof.npz", ids=val_ids, probs=oof_tta, probs_no_tta=oof_plain)
    bio.write_text(out_dir / "history.csv", pd.DataFrame(history, columns=list(_HISTORY_COLUMNS)).to_csv(index=False))
    bio.write_json(out_dir / "metrics.json", metrics)  # last: its presence marks the cell done
    ckpt_path.unlink(missing_ok=True)
    return metrics


_HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_score", "val_iou", "epoch_s")


def load_model(cell_dir: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild a cell's model from its metrics.json and load its best-epoch weights (state dict only)."""
    metrics = bio.read_json(Path(cell_dir) / "metrics.json")
    model = architectures.create(metrics["arch"], in_channels=1, classes=1, **metrics["arch_kwargs"])
    model.load_state_dict(torch.load(Path(cell_dir) / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()
