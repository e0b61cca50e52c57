"""Train, evaluate and export the small ×2 networks whose weights ship in ``srlib/weights/``.

Every network gets the same budget (:data:`srlib.pretrained.SMALL_CONFIGS`: 32 features, 8 residual blocks)
and the same two-stage recipe (:data:`srlib.pretrained.SMALL_RECIPE`, :data:`~srlib.pretrained.SMALL_RECIPE_STAGE2`).
The commands that made the shipped files, on a 2-core CPU shared with other jobs (README, "Trained small
networks")::

    export SRLIB_DATA=/path/to/data          # holds train/SunHays80 and benchmark/{Set5,Set14,B100,Urban100}
                                             # (or pass --data /path/to/data to every command below)
    python benchmarks/train_small.py train --stage 1 --out runs/small_x2 --jobs 2 --threads 1
    python benchmarks/train_small.py train --stage 2 --out runs/small_x2 --jobs 2 --threads 1
    python benchmarks/train_small.py export --out runs/small_x2           # -> srlib/weights/*.safetensors
    python benchmarks/train_small.py eval --out runs/small_x2 --crop B100=96 Urban100=96
    python benchmarks/train_small.py table --out runs/small_x2            # markdown table for the README
    python benchmarks/train_small.py analyse --out runs/small_x2          # HSPA sparsity, LCoAN overlap

``train`` runs one subprocess per network (``train-one``), ``--jobs`` at a time, longest first; each calls
:func:`srlib.train.train` exactly as ``python -m srlib.train`` does, but keeps the decoded training images in
memory (``HRFolderDataset(cache=True)``: the CLI decodes the PNG for every patch, which on this CPU costs
as much as a training step of the small EDSR) and sets the thread count. The data order and augmentation
depend only on the seed, so the runs are those of (``python benchmarks/train_small.py commands`` prints all
twelve)::

    python -m srlib.train --model hspan --scale 2 --preset small --model-arg n_resgroups=2 \\
        --model-arg n_resblocks=4 --model-arg n_feats=32 --model-arg topk=64 \\
        --iterations 400 --batch-size 8 --patch-size 48 --lr 2e-4 --milestones '' --seed 0 \\
        --val-set none --ckpt-every 100 --log-every 50 --out runs/small_x2/hspan
    python -m srlib.train --model hspan ... --weights runs/small_x2/hspan/last.pt \\
        --iterations 250 --batch-size 8 --patch-size 48 --lr 1e-3 --milestones 125,190 --seed 1 \\
        --val-set none --ckpt-every 100 --log-every 50 --out runs/small_x2/hspan_stage2

Runs are resumable: ``train`` continues from ``last.pt`` in each run folder.

Evaluation: the standard protocol (:func:`srlib.inference.evaluate`: 8-bit, Y channel, ``scale`` border
pixels cropped) on Set5 and Set14 (whole images, ×2 pairs as published), B100 (×2 pairs as published) and the
30-image Urban100 subset, which is published at ×4 only: its HR images (cropped to multiples of 4) are
downscaled ×2 with srlib's MATLAB-compatible bicubic and quantised to 8 bits. To fit the CPU budget, B100 and
Urban100 can be reduced (``--crop SET=SIZE``: the central SIZE×SIZE LR crop of every image, cut after
degrading the whole image; ``--limit SET=N``: the first N images). Whole images (or crops) are
super-resolved in one pass, except by HSPAN, whose dense ``L × L`` score matrix does not fit in memory for
large inputs: it runs on tiles (:func:`srlib.inference.forward_chop`, ``--hspan-tile`` LR pixels with
``--hspan-overlap`` pixels of context).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Longest first (measured seconds per step on the 2-core CPU), so two lanes finish together.
ORDER = ("hspan", "enlcn", "dlsn", "nlsn", "lcoan", "edsr")
EVAL_SETS = ("Set5", "Set14", "B100", "Urban100")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _recipe(args: argparse.Namespace) -> dict:
    from srlib.pretrained import SMALL_RECIPE, SMALL_RECIPE_STAGE2

    r = dict(SMALL_RECIPE_STAGE2 if getattr(args, "stage", 1) == 2 else SMALL_RECIPE)
    if args.iterations is not None:
        r["iterations"] = args.iterations
    return r


def run_dir(out: str | Path, model: str, stage: int) -> Path:
    """Run folder of ``model``: ``<out>/<model>`` (stage 1) or ``<out>/<model>_stage2``."""
    return Path(out) / (model if stage == 1 else f"{model}_stage2")


def cli_command(model: str, out: str, recipe: dict, stage: int = 1) -> str:
    """The equivalent ``python -m srlib.train`` command line for ``model``."""
    from srlib.pretrained import SMALL_CONFIGS

    preset, overrides = SMALL_CONFIGS[model]
    margs = " ".join(f"--model-arg {k}={v}" for k, v in overrides.items())
    if stage == 2:
        margs += f" --weights {run_dir(out, model, 1)}/last.pt"
    return (f"python -m srlib.train --model {model} --scale 2 --preset {preset} {margs} "
            f"--iterations {recipe['iterations']} --batch-size {recipe['batch_size']} "
            f"--patch-size {recipe['patch_size']} --lr {recipe['lr']:g} "
            f"--milestones {','.join(map(str, recipe['milestones'])) or chr(39) * 2} --gamma {recipe['gamma']:g} "
            f"--seed {recipe['seed']} --val-set none --ckpt-every 100 --log-every 50 --out {run_dir(out, model, stage)}")


# --------------------------------------------------------------------------------------------------- train
def train_one(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from srlib import data as sdata
    from srlib.pretrained import build_small
    from srlib.train import TrainConfig, train

    recipe = _recipe(args)
    out = run_dir(args.out, args.model, args.stage)
    folder = sdata.default_train_folder()
    if folder is None:
        raise FileNotFoundError("no training folder under SRLIB_DATA (expected train/SunHays80)")
    train_set = sdata.HRFolderDataset(folder, 2, patch_size=recipe["patch_size"], augment=True, cache=True)
    model = build_small(args.model, 2)
    if args.stage == 2 and not (out / "last.pt").is_file():
        from srlib.checkpoint import load_weights

        load_weights(model, run_dir(args.out, args.model, 1) / "last.pt")  # stage 2 starts from stage 1
    cfg = TrainConfig(iterations=recipe["iterations"], batch_size=recipe["batch_size"],
                      patch_size=recipe["patch_size"], lr=recipe["lr"], milestones=recipe["milestones"],
                      gamma=recipe["gamma"], loss=recipe["loss"], seed=recipe["seed"], val_every=0,
                      ckpt_every=100, log_every=50, scale=2)
    extra = model.make_extra_loss() if hasattr(model, "make_extra_loss") else None
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{args.model}: {n_params:,} parameters, {len(train_set)} images from {folder}", flush=True)
    t0 = time.time()
    load0 = os.getloadavg()[0]
    result = train(model, train_set, None, cfg, out, resume=True, extra_loss=extra, device="cpu", progress=False)
    seconds = time.time() - t0
    timing_file = out / "timing.json"
    previous = json.loads(timing_file.read_text()) if timing_file.is_file() else {"segments": []}
    previous["segments"].append({"from": result["resumed_from"] or 0, "to": result["iteration"],
                                 "seconds": round(seconds, 1), "loadavg_start": load0,
                                 "loadavg_end": os.getloadavg()[0]})
    previous.update(model=args.model, parameters=n_params, threads=args.threads, cpu=_cpu_model(),
                    n_cpus=os.cpu_count(), torch=torch.__version__, recipe={**recipe, "milestones": list(recipe["milestones"])},
                    command=cli_command(args.model, args.out, recipe, args.stage), stage=args.stage,
                    seconds=round(sum(s["seconds"] for s in previous["segments"]), 1))
    timing_file.write_text(json.dumps(previous, indent=1))
    loss = result["history"]["train"][-1]["loss"] if result["history"]["train"] else float("nan")
    print(f"{args.model}: {result['iteration']} iterations, final L1 {loss:.5f}, {seconds:.0f} s", flush=True)
    return 0


def train_all(args: argparse.Namespace) -> int:
    models = [m for m in ORDER if m in (args.models or ORDER)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pending, running = list(models), {}
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    while pending or running:
        while pending and len(running) < args.jobs:
            m = pending.pop(0)
            cmd = [sys.executable, __file__, "train-one", "--model", m, "--out", str(out), "--threads", str(args.threads),
                   "--stage", str(args.stage)]
            if args.iterations is not None:
                cmd += ["--iterations", str(args.iterations)]
            log = open(out / f"{m}{'' if args.stage == 1 else '_stage2'}.log", "a")
            running[m] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            print(f"[{time.time() - t0:7.0f} s] started {m}", flush=True)
        time.sleep(5)
        for m, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[m]
                print(f"[{time.time() - t0:7.0f} s] {m} finished with code {proc.returncode}", flush=True)
                if proc.returncode != 0:
                    print(f"see {out / (m + '.log')}", flush=True)
    total = time.time() - t0
    (out / f"train_all_stage{args.stage}.json").write_text(json.dumps({"models": models, "jobs": args.jobs, "threads": args.threads,
                                                    "wall_seconds": round(total, 1), "cpu": _cpu_model(),
                                                    "n_cpus": os.cpu_count()}, indent=1))
    print(f"all done in {total:.0f} s", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------- eval
def urban100_x2():
    """The Urban100 subset at ×2: its ×4 HR images (modcropped to 4) downscaled by MATLAB-compatible bicubic."""
    from functools import partial

    from srlib import data as sdata
    from srlib.config import data_dir

    folder = data_dir() / "benchmark" / "Urban100" / "image_SRF_4"
    files = sorted(folder.glob("*_HR.png"))
    if not files:
        raise FileNotFoundError(f"no Urban100 HR images in {folder}")
    sources = [(p.stem.split("_SRF")[0], partial(sdata.load_image, p)) for p in files]
    return sdata.HRImagesDataset(sources, 2)


class CenterCrop:
    """Central ``lr_size``×``lr_size`` LR crop of every item of ``dataset`` and the aligned HR crop.

    The LR is cropped *after* degrading the whole image, so the pair is exactly the crop of the full pair.
    """

    def __init__(self, dataset, lr_size: int, scale: int = 2):
        self.dataset, self.lr_size, self.scale = dataset, lr_size, scale

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[i]
        h, w = item["lr"].shape[-2:]
        n, s = min(self.lr_size, h, w), self.scale
        y, x = (h - n) // 2, (w - n) // 2
        return {"lr": item["lr"][:, y:y + n, x:x + n], "hr": item["hr"][:, s * y:s * (y + n), s * x:s * (x + n)],
                "name": item["name"]}


def benchmark(name: str, args=None):
    """Evaluation set ``name`` at ×2, reduced as the options say (``--limit SET=N``, ``--crop SET=SIZE``)."""
    import torch.utils.data

    from srlib import data as sdata

    ds = urban100_x2() if name == "Urban100" else sdata.BenchmarkDataset(name, 2)
    limit = dict(getattr(args, "limit", None) or {}).get(name)
    crop = dict(getattr(args, "crop", None) or {}).get(name)
    if limit:
        ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    if crop:
        ds = CenterCrop(ds, crop)
    return ds


def protocol(args) -> dict:
    """How each set was reduced (recorded next to the results)."""
    return {s: {"limit": dict(args.limit or {}).get(s), "lr_crop": dict(args.crop or {}).get(s)} for s in EVAL_SETS}


class Bicubic(object):
    """Bicubic upsampling (MATLAB-compatible) as a model: the protocol's baseline row."""

    def __call__(self, lr):
        from srlib.data import imresize

        return imresize(lr, 2).clamp(0, 1)


def evaluate_model(model_name: str, model, sets, args) -> dict:
    import torch

    from srlib.inference import evaluate, forward_chop

    fn = model
    if model_name == "hspan":
        # Exact ST (the trained mode) gives the same output for any top-k; the learned supports are ~100-200
        # keys, so starting the search at 256 saves the official 64 -> 128 -> 256 retries (speed only).
        model.set_topk(256)
        def fn(lr):  # noqa: E306 - dense L x L scores: tiles keep memory bounded
            return forward_chop(model, lr, 2, tile=args.hspan_tile, overlap=args.hspan_overlap, tile_batch=1)
    rows = {}
    for s in sets:
        t = time.time()
        torch.manual_seed(0)  # NLSN / DLSN draw random rotations at every forward
        with torch.no_grad():
            r = evaluate(fn, benchmark(s, args), 2)
        rows[s] = {"psnr": r["psnr"], "ssim": r["ssim"], "n_images": r["n_images"], "seconds": round(time.time() - t, 1),
                   "per_image": r["per_image"]}
        print(f"{model_name:6s} {s:8s} {r['psnr']:.3f} dB  SSIM {r['ssim']:.4f}  ({time.time() - t:.0f} s)", flush=True)
    return rows


def eval_all(args: argparse.Namespace) -> int:
    """Evaluate each network (and bicubic); results go to ``<out>/eval/<model>.json`` (one file per network,
    so several ``eval`` processes can run side by side)."""
    import torch

    torch.set_num_threads(args.threads)
    from srlib.checkpoint import load_weights
    from srlib.pretrained import build_small, pretrained

    out = Path(args.out)
    sets = args.sets or list(EVAL_SETS)
    for m in args.models or ["bicubic", *reversed(ORDER)]:
        results_file = out / "eval" / f"{m}.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        if m == "bicubic":
            model = Bicubic()
        elif args.shipped:
            model = pretrained(f"{m}-small-x2")
        else:
            model = build_small(m, 2)
            load_weights(model, run_dir(out, m, args.stage) / "last.pt")
            model.eval()
        todo = [s for s in sets if args.redo or s not in results]
        for s in todo:
            rows = evaluate_model(m, model, [s], args)
            # re-read before writing: another eval process may have added other sets of the same network
            results = json.loads(results_file.read_text()) if results_file.is_file() else {}
            results.update(rows)
            results.setdefault("_protocol", {}).update({s: protocol(args)[s]})
            if m == "hspan":
                results["_chop"] = {"tile": args.hspan_tile, "overlap": args.hspan_overlap}
            results_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = results_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, results_file)
    return 0


# -------------------------------------------------------------------------------------------------- export
def export(args: argparse.Namespace) -> int:
    import dataclasses

    from srlib.checkpoint import load_checkpoint, save_safetensors
    from srlib.pretrained import WEIGHTS_DIR, build_small

    out = Path(args.out)
    dest = Path(args.dest) if args.dest else WEIGHTS_DIR
    for m in args.models or ORDER:
        ckpt = load_checkpoint(run_dir(out, m, args.stage) / "last.pt")
        model = build_small(m, 2)
        stages = [json.loads((run_dir(out, m, st) / "timing.json").read_text()) for st in range(1, args.stage + 1)]
        meta = {
            "model": m, "scale": "2", "name": f"{m}-small-x2",
            "config": json.dumps(dataclasses.asdict(model.config)),
            "recipe": json.dumps({f"stage{i + 1}": t["recipe"] for i, t in enumerate(stages)}),
            "training": json.dumps({"iterations": [t["recipe"]["iterations"] for t in stages],
                                    "seconds": round(sum(t["seconds"] for t in stages), 1),
                                    "threads": stages[-1]["threads"], "cpu": stages[-1]["cpu"],
                                    "torch": stages[-1]["torch"],
                                    "data": "SunHays80 (30 HR images), bicubic x2 on the fly",
                                    "final_l1": ckpt["history"]["train"][-1]["loss"]}),
            "format": "float32 state_dict of srlib.models." + m,
        }
        sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        digest = save_safetensors(dest / f"{m}-small-x2.safetensors", sd, metadata=meta)
        size = (dest / f"{m}-small-x2.safetensors").stat().st_size
        print(f'    "{m}": "{digest}",  # {size / 1e6:.2f} MB', flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- analyse
def _probe_crops(size: int = 48):
    """Central ``size``×``size`` LR crops: Set5 ×2 and the first 5 Urban100 images at ×2 (samples if no data)."""
    import torch

    from srlib import data as sdata

    crops = {}
    try:
        sets = {"Set5": sdata.BenchmarkDataset("Set5", 2), "Urban100": urban100_x2()}
        for set_name, ds in sets.items():
            for i in range(5):
                item = ds[i]
                h, w = item["lr"].shape[-2:]
                y, x = (h - size) // 2, (w - size) // 2
                crops[f"{set_name}/{item['name']}"] = item["lr"][:, y:y + size, x:x + size]
    except FileNotFoundError:
        for name in sdata.DEFAULT_SAMPLE_NAMES:
            lr = sdata.quantize(sdata.imresize(sdata.load_sample(name), 0.5))
            h, w = lr.shape[-2:]
            crops[name] = lr[:, (h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
    return {k: v[None].contiguous() for k, v in crops.items()}


def analyse(args: argparse.Namespace) -> int:
    """The papers' qualitative claims at this scale: HSPA sparser than NLA; LCoAN's shallow/deep overlap."""
    import torch

    torch.set_num_threads(args.threads)
    from srlib.attention.softthreshold import soft_threshold
    from srlib.pretrained import build_small, pretrained
    from srlib.analysis.capture import module_inputs
    from srlib.analysis.overlap import feature_attention_map, layer_overlaps
    from srlib.analysis.sparsity import mass_coverage, support_sizes

    crops = _probe_crops()
    report: dict = {"probe": {"crops": list(crops), "lr_size": 48}}

    # 1. HSPAN Fig. 4 / Table I: the same learned scores s_ij normalised by ST (HSPA) and by softmax (NLA).
    def hspa_stats(net):
        names = [n for n, m in net.named_modules() if type(m).__name__ == "HSPA"]
        rows = {n: {"st_support": [], "st_cov90": [], "softmax_cov90": []} for n in names}
        for lr in crops.values():
            inputs = module_inputs(net, lr, names, which="last")
            mods = dict(net.named_modules())
            for n in names:
                with torch.no_grad():
                    s = mods[n].similarity(inputs[n])
                    st = soft_threshold(s, dim=-1, topk=mods[n].topk)
                    sm = torch.softmax(s, dim=-1)
                rows[n]["st_support"].append(support_sizes(st).double().mean().item())
                rows[n]["st_cov90"].append(mass_coverage(st, 0.9).double().mean().item())
                rows[n]["softmax_cov90"].append(mass_coverage(sm, 0.9).double().mean().item())
        return {n: {k: sum(v) / len(v) for k, v in r.items()} for n, r in rows.items()}

    torch.manual_seed(0)
    report["hspa"] = {"trained": hspa_stats(pretrained("hspan-small-x2")),
                      "untrained": hspa_stats(build_small("hspan", 2).eval()), "keys": 48 * 48}

    # 2. LCoAN Fig. 5: overlap rate of the parameter-free map softmax(cos/0.1) of the features entering every
    #    residual block (8 depths) and both LCoA modules, with the shallowest one as reference.
    def lcoan_curve(net):
        # forward order: FAU g = 4 residual blocks, then its LCoA (then m_conv and the FAU's skip)
        names = [n for g in range(2) for n in [*(f"body.{g}.local_body.{b}" for b in range(4)), f"body.{g}.attention.0"]]
        lcoas = [n for n, _ in net.attention_modules()]
        ovl, top, pair, pair_top = [], [], [], []
        for lr in crops.values():
            torch.manual_seed(0)
            inputs = module_inputs(net, lr, names, which="first")
            maps = {n: feature_attention_map(t, temperature=0.1) for n, t in inputs.items()}
            r = layer_overlaps(maps, reference=0, top_k=16)
            ovl.append(r["overlap"])
            top.append(r["topk"])
            # shallow LCoA (computes the pattern) vs deep LCoA (reuses it): the pair of Fig. 5
            p = layer_overlaps({n: maps[n] for n in lcoas}, reference=0, top_k=16)
            pair.append(p["overlap"][1])
            pair_top.append(p["topk"][1])
        return {"names": names, "overlap": torch.stack(ovl).mean(0).tolist(), "top16": torch.stack(top).mean(0).tolist(),
                "lcoa_pair": lcoas, "lcoa_pair_overlap": torch.stack(pair).mean().item(),
                "lcoa_pair_top16": torch.stack(pair_top).mean().item()}

    torch.manual_seed(0)
    report["lcoan"] = {"trained": lcoan_curve(pretrained("lcoan-small-x2")),
                       "untrained": lcoan_curve(build_small("lcoan", 2).eval())}
    # the same yardstick on the trained EDSR (no attention): is the curve specific to LCoAN?
    edsr = pretrained("edsr-small-x2")
    names = [f"body.{i}" for i in range(8)]
    ovl = []
    for lr in crops.values():
        inputs = module_inputs(edsr, lr, names, which="first")
        ovl.append(layer_overlaps({n: feature_attention_map(t, 0.1) for n, t in inputs.items()})["overlap"])
    report["edsr_blocks_overlap"] = {"names": names, "overlap": torch.stack(ovl).mean(0).tolist()}

    out = Path(args.out) / "analysis.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------- table
def table(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results = {m: json.loads((out / "eval" / f"{m}.json").read_text()) for m in ["bicubic", *ORDER]
               if (out / "eval" / f"{m}.json").is_file()}
    names = {"bicubic": "Bicubic", "edsr": "EDSR baseline", "nlsn": "NLSN", "enlcn": "ENLCN", "dlsn": "DLSN",
             "hspan": "HSPAN", "lcoan": "LCoAN"}
    params = {}
    for m in ORDER:
        files = [run_dir(out, m, st) / "timing.json" for st in (1, 2)]
        if all(f.is_file() for f in files):
            runs = [json.loads(f.read_text()) for f in files]
            params[m] = {"parameters": runs[0]["parameters"], "seconds": sum(r["seconds"] for r in runs)}
    print("| network | params | train time | " + " | ".join(f"{s} ×2" for s in EVAL_SETS) + " |")
    print("|---|---:|---:|" + "---:|" * len(EVAL_SETS))
    for m in ["bicubic", "edsr", "nlsn", "enlcn", "dlsn", "hspan", "lcoan"]:
        if m not in results:
            continue
        cells = []
        for s in EVAL_SETS:
            r = results[m].get(s)
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.4f}" if r else "–")
        p = params.get(m)
        pc = f"{p['parameters'] / 1e3:.0f}k" if p else "–"
        tc = f"{p['seconds'] / 60:.0f} min" if p else "–"
        print(f"| {names[m]} | {pc} | {tc} | " + " | ".join(cells) + " |")
    return 0


def commands(args: argparse.Namespace) -> int:
    from srlib.pretrained import SMALL_RECIPE, SMALL_RECIPE_STAGE2

    for stage, recipe in ((1, SMALL_RECIPE), (2, SMALL_RECIPE_STAGE2)):
        print(f"# stage {stage}")
        for m in ORDER:
            print(cli_command(m, args.out, dict(recipe), stage))
    return 0


def _set_int(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or name not in EVAL_SETS:
        raise argparse.ArgumentTypeError(f"expected SET=INT with SET in {EVAL_SETS}, got {text!r}")
    return name, int(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "train-one", "eval", "export", "table", "commands", "analyse"):
        q = sub.add_parser(name)
        q.add_argument("--out", default=str(REPO / "runs" / "small_x2"), help="runs folder")
        q.add_argument("--data", default=None,
                       help="data root with train/SunHays80 and benchmark/ (default: $SRLIB_DATA, else data/)")
        q.add_argument("--models", nargs="*", default=None, help=f"subset of {', '.join(ORDER)}")
        q.add_argument("--threads", type=int, default=1, help="torch threads per process")
        q.add_argument("--iterations", type=int, default=None, help="override the recipe (tests only)")
        q.add_argument("--stage", type=int, choices=(1, 2), default=2 if name in ("eval", "export", "analyse") else 1,
                       help="training stage (eval/export read the final stage 2)")
        if name == "train":
            q.add_argument("--jobs", type=int, default=2, help="networks trained at the same time")
        if name == "train-one":
            q.add_argument("--model", required=True)
        if name == "eval":
            q.add_argument("--sets", nargs="*", default=None)
            q.add_argument("--shipped", action="store_true", help="evaluate srlib/weights (srlib.pretrained)")
            q.add_argument("--redo", action="store_true", help="recompute sets already in results.json")
            q.add_argument("--hspan-tile", type=int, default=32)
            q.add_argument("--hspan-overlap", type=int, default=8)
            q.add_argument("--limit", nargs="*", type=_set_int, default=[], metavar="SET=N",
                           help="evaluate only the first N images of SET")
            q.add_argument("--crop", nargs="*", type=_set_int, default=[], metavar="SET=SIZE",
                           help="central SIZE x SIZE LR crops of SET")
        if name == "export":
            q.add_argument("--dest", default=None, help="default: srlib/weights")
    args = p.parse_args(argv)
    if args.data is not None:  # one data setting for this process and the train-one processes it starts
        root = Path(args.data).expanduser().resolve()
        if not root.is_dir():
            p.error(f"--data {args.data}: no such folder")
        os.environ["SRLIB_DATA"] = str(root)
    return {"train": train_all, "train-one": train_one, "eval": eval_all, "export": export, "table": table,
            "commands": commands, "analyse": analyse}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
