"""Train the demo detector deterministically for a fixed number of steps (torch, CPU).

Heatmap targets are TTFNet-style elliptical Gaussians at object centres (penalty-reduced
focal loss); regression targets are left/top/right/bottom distances in input pixels at the
positions of each object's Gaussian (GIoU loss weighted by the Gaussian). Same seed -> same
weights. Output: ``weights.npz`` (framework-neutral), ``meta.json``, ``reference.npz``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.demo import arch
from quantsweep.evaluate.preprocess import load_image, preprocess, preprocess_file, val_images
from quantsweep.job import Job, Result, ToolFailure
from quantsweep.status import write_bytes_atomic, write_json_atomic

ALPHA = 0.54  # Gaussian size relative to the box (TTFNet)
REG_WEIGHT = 1.0


def make_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, size: int,
                 stride: int = arch.STRIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hm [C,F,F], reg target [4,F,F] (input pixels), reg weight [F,F] for one image whose
    boxes (xyxy) are already in network-input pixels."""
    f = size // stride
    hm = np.zeros((num_classes, f, f), np.float32)
    reg = np.zeros((4, f, f), np.float32)
    wgt = np.zeros((f, f), np.float32)
    gx, gy = arch.grid(f, f, stride)
    gx, gy = gx.reshape(f, f), gy.reshape(f, f)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in np.argsort(-areas):  # large first, small ones overwrite where they overlap
        x1, y1, x2, y2 = boxes[i]
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        sx, sy = max(ALPHA * w / 6 / stride, 0.5), max(ALPHA * h / 6 / stride, 0.5)
        ci, cj = min(int(cx / stride), f - 1), min(int(cy / stride), f - 1)
        g = np.exp(-((gx / stride - 0.5 - ci) ** 2) / (2 * sx * sx)
                   - ((gy / stride - 0.5 - cj) ** 2) / (2 * sy * sy)).astype(np.float32)
        k = int(labels[i])
        hm[k] = np.maximum(hm[k], g)
        inside = (gx > x1) & (gx < x2) & (gy > y1) & (gy < y2) & (g > 0.05)
        inside[cj, ci] = True
        reg[0][inside] = gx[inside] - x1
        reg[1][inside] = gy[inside] - y1
        reg[2][inside] = x2 - gx[inside]
        reg[3][inside] = y2 - gy[inside]
        norm = g[inside].sum()
        wgt[inside] = g[inside] / max(norm, 1e-6) * math.log(max(w * h, 2.0))
    return hm, reg, wgt


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_split(manifest: dict[str, Any], split: str, pre: dict[str, Any], num_classes: int,
               cat_ids: list[int]) -> Arrays:
    """Images and targets of one split at the preprocessing's size."""
    return load_split_sizes(manifest, split, pre, num_classes, cat_ids, [pre["size"][0]])[0]


def load_split_sizes(manifest: dict[str, Any], split: str, pre: dict[str, Any], num_classes: int,
                     cat_ids: list[int], sizes: list[int], threads: int = 1) -> list[Arrays]:
    """Images and targets of one split at each (square) input size; each image decoded once,
    on ``threads`` threads (decoding, resizing and normalising release the GIL), into arrays
    allocated once (stacking 800 images afterwards cost as much as decoding them)."""
    from concurrent.futures import ThreadPoolExecutor

    ann = json.loads(Path(manifest["splits"][split]["annotations"]).read_text())
    by_image: dict[int, list[Any]] = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = val_images(manifest, split, None)
    if not images:
        raise ToolFailure("empty_split", f"the {split} split has no images")

    def one(im: dict[str, Any]) -> list[tuple[np.ndarray, ...]]:
        img = load_image(im["path"])
        out: list[tuple[np.ndarray, ...]] = []
        for size in sizes:
            x, meta = preprocess(img, {**pre, "size": [size, size]})
            boxes, labels = [], []
            for a in by_image.get(im["id"], []):
                bx, by, bw, bh = a["bbox"]
                boxes.append([bx * meta.scale_x, by * meta.scale_y, (bx + bw) * meta.scale_x,
                              (by + bh) * meta.scale_y])
                labels.append(cat_ids.index(a["category_id"]))
            out.append((x, *make_targets(np.asarray(boxes, np.float32).reshape(-1, 4),
                                         np.asarray(labels, np.int64), num_classes, size)))
        return out

    arrays: list[list[np.ndarray]] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, per_size in enumerate(pool.map(one, images)):  # in order: same arrays as serial
            if not arrays:
                arrays = [[np.empty((len(images), *v.shape), v.dtype) for v in vs] for vs in per_size]
            for dst, vs in zip(arrays, per_size, strict=True):
                for d, v in zip(dst, vs, strict=True):
                    d[i] = v
    return [(a[0], a[1], a[2], a[3]) for a in arrays]


def focal_loss(logits: Any, target: Any) -> Any:
    import torch

    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def giou_loss(pred: Any, target: Any, weight: Any) -> Any:
    """pred/target: [N,4,F,F] ltrb distances; weight [N,F,F]."""
    import torch

    mask = weight > 0
    if not mask.any():
        return pred.sum() * 0
    p = pred.permute(0, 2, 3, 1)[mask]
    t = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    # boxes relative to the same point: x1=-l, y1=-t, x2=r, y2=b
    pa = (p[:, 0] + p[:, 2]) * (p[:, 1] + p[:, 3])
    ta = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])
    iw = torch.min(p[:, 0], t[:, 0]) + torch.min(p[:, 2], t[:, 2])
    ih = torch.min(p[:, 1], t[:, 1]) + torch.min(p[:, 3], t[:, 3])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = pa + ta - inter + 1e-6
    iou = inter / union
    ew = torch.max(p[:, 0], t[:, 0]) + torch.max(p[:, 2], t[:, 2])
    eh = torch.max(p[:, 1], t[:, 1]) + torch.max(p[:, 3], t[:, 3])
    enclose = ew * eh + 1e-6
    giou = iou - (enclose - union) / enclose
    return ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)


def training_precision(configured: str, cpu_bf16: bool) -> str:
    """The compute type the training runs in: ``auto`` is bfloat16 where the CPU has it natively
    and float32 elsewhere. Emulated bfloat16 is no shortcut: on an AVX2-only CPU (AMD EPYC, no
    AVX512-BF16) a step of the demo took 2.0 s in bf16 and 0.18 s in float32 at 160 px, two
    threads, where an AMX CPU takes 0.06 s in bf16. The weights differ between the two."""
    if configured == "auto":
        return "bfloat16" if cpu_bf16 else "float32"
    return configured


def train(manifest: dict[str, Any], pre: dict[str, Any], demo: dict[str, Any],
          log: Any = print) -> tuple[Any, dict[str, Any]]:
    import torch

    from quantsweep.demo.torch_model import Detector

    torch.set_num_threads(int(demo["threads"]))
    torch.manual_seed(demo["seed"])
    cat_ids = sorted(c["id"] for c in manifest["categories"])
    nc = len(cat_ids)
    t0 = time.monotonic()
    # progressive resizing: the first `fraction` of the steps at a smaller input (fewer pixels
    # per step, and the heatmap leaves its plateau sooner), the rest at the deploy size
    prog = demo.get("progressive") or {}
    size = pre["size"][0]
    small = int(prog.get("input_size", size)) if prog.get("fraction", 0) > 0 else size
    sizes = [size] if small == size else [size, small]
    splits = load_split_sizes(manifest, "train", pre, nc, cat_ids, sizes, int(demo["threads"]))
    load_s = time.monotonic() - t0
    # channels-last convolutions are about 20% faster on the CPU; the weights are the same
    data = [tuple(torch.from_numpy(a) for a in arrays) for arrays in splits]
    data = [(d[0].contiguous(memory_format=torch.channels_last), *d[1:]) for d in data]
    switch = round(prog.get("fraction", 0) * demo["steps"]) if small != size else 0
    # bfloat16 autocast: convolutions in bf16 (about 2.5x faster where the CPU has AVX512-BF16
    # or AMX), parameters, BN statistics, losses and optimizer state in float32
    cpu_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    bf16 = training_precision(demo.get("precision", "float32"), cpu_bf16) == "bfloat16"
    model = Detector(nc).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=demo["lr"], weight_decay=1e-4)
    steps, bs = demo["steps"], min(demo["batch_size"], len(data[0][0]))
    warm = max(1, min(100, steps // 10))
    gen = torch.Generator().manual_seed(demo["seed"])
    perm = torch.randperm(len(data[0][0]), generator=gen)
    pos = 0
    losses = []
    model.train()
    t1 = time.monotonic()
    for step in range(steps):
        lr = demo["lr"] * ((step + 1) / warm if step < warm else
                           0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        if pos + bs > len(perm):
            perm, pos = torch.randperm(len(perm), generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        x, hm, rg, wg = (a[idx] for a in data[-1 if step < switch else 0])
        flip = torch.rand(bs, generator=gen) < 0.5
        if flip.any():  # horizontal flip: mirror maps, swap left/right distances
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            hm = torch.where(flip[:, None, None, None], hm.flip(3), hm)
            rg = torch.where(flip[:, None, None, None], rg.flip(3)[:, [2, 1, 0, 3]], rg)
            wg = torch.where(flip[:, None, None], wg.flip(2), wg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out_hm, out_reg = model(x)
        out_hm, out_reg = out_hm.float(), out_reg.float()
        l_hm = focal_loss(out_hm, hm)
        l_reg = giou_loss(out_reg, rg, wg)
        loss = l_hm + REG_WEIGHT * l_reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            with torch.no_grad():
                p_pos = float(torch.sigmoid(out_hm)[hm.eq(1)].mean())
            log(f"step {step:5d} lr {lr:.5f} loss {losses[-1]:.4f} hm {float(l_hm.detach()):.4f} "
                f"p(pos) {p_pos:.3f} reg {float(l_reg.detach()):.4f} "
                f"({time.monotonic() - t1:.0f} s)")
    model.eval()
    info = {"steps": steps, "batch_size": bs, "train_images": len(perm), "load_s": round(load_s, 1),
            "precision": "bfloat16" if bf16 else "float32",
            "precision_config": demo.get("precision", "float32"), "cpu_bf16": cpu_bf16,
            "input_sizes": {"steps_before": switch, "small": small, "deploy": size},
            "train_s": round(time.monotonic() - t1, 1), "final_loss": losses[-1],
            "loss_first": losses[0]}
    return model, info


def weights_digest(state: dict[str, np.ndarray]) -> str:
    """A digest of the weights' values (npz files carry zip timestamps)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k]).tobytes())
    return h.hexdigest()


def run(job: Job) -> Result:
    """The ``train`` stage: weights.npz + meta.json + reference.npz under the out dir."""
    import io

    import torch

    from quantsweep.demo.torch_model import Deploy, state_to_numpy

    p = job.params
    manifest = json.loads(Path(p["dataset"]["manifest"]).read_text())
    demo, pre = p["demo"], p["preprocess"]
    model, info = train(manifest, pre, demo, log=lambda s: print(s, flush=True))
    out = job.out_dir
    buf = io.BytesIO()
    np.savez(buf, **state_to_numpy(model))  # type: ignore[arg-type]
    write_bytes_atomic(out / "weights.npz", buf.getvalue())
    meta = {"num_classes": len(manifest["categories"]), "top_k": demo["top_k"],
            "input_size": demo["input_size"], "preprocess": pre,
            "categories": manifest["categories"]}
    write_json_atomic(out / "meta.json", meta)
    # reference outputs on fixed calib images: every other framework must reproduce them
    ref_imgs = val_images(manifest, "calib", 2)
    pairs = [preprocess_file(im["path"], pre) for im in ref_imgs]
    x = np.stack([a for a, _ in pairs])
    sizes = np.array([[m.orig_w, m.orig_h] for _, m in pairs], np.int32)
    with torch.no_grad():
        hm, reg = model(torch.from_numpy(x))
        labels, boxes, scores = Deploy(model, demo["top_k"], demo["input_size"])(
            torch.from_numpy(x), torch.from_numpy(sizes))
    buf = io.BytesIO()
    np.savez(buf, images=x, orig_sizes_wh=sizes, hm=hm.numpy(), reg=reg.numpy(),
             labels=labels.numpy(), boxes=boxes.numpy(), scores=scores.numpy())
    write_bytes_atomic(out / "reference.npz", buf.getvalue())
    digest = weights_digest(state_to_numpy(model))
    return Result(artifacts={"weights": str(out / "weights.npz"), "meta": str(out / "meta.json"),
                             "reference": str(out / "reference.npz")},
                  data={**info, "weights_sha256": digest,
                        "params": int(sum(v.numel() for v in model.state_dict().values()))})


def qat_batches(manifest: dict[str, Any], pre: dict[str, Any]) -> list[Any]:
    """The demo's training tensors for QAT (named in its ``source.json``): images, heatmaps,
    box distances and their weights of the train split."""
    import torch

    cat_ids = sorted(c["id"] for c in manifest["categories"])
    return [torch.from_numpy(a) for a in load_split(manifest, "train", pre, len(cat_ids), cat_ids)]


def qat_loss(module: Any, x: Any, hm: Any, reg: Any, wgt: Any) -> Any:
    """The demo's training loss on one batch, for QAT of its deploy module."""
    out_hm, out_reg = module.det(x)
    return focal_loss(out_hm, hm) + REG_WEIGHT * giou_loss(out_reg, reg, wgt)
