"""ReDO learning parity, small scale: the authors' training script and tfseg side by side (a benchmark).

Trains ReDO twice on the same photos at the same small widths for the same iterations: once with the
authors' own `train.py` (shared/reference/ReDO beside the repository, run unmodified on the CPU), once with
`python -m tfseg.train` in the authors' mode (every region redrawn, a separate z-encoder, their
optimisers and sizes). Both runs' mask networks are scored at the same iterations on the same
validation photos with one metric (`tfseg.evaluation.metrics.MaskMetrics`), and the two curves are
written side by side: `curves.json`, `parity.png`, `parity.md` under `--out`.

    python tools/redo_learning_parity.py --photos=/path/to/flowers17/images \\
        --masks=/path/to/flowers17/masks --out=parity/redo --iterations=1500 --eval_every=250

How the authors' script runs here, without editing it: `runpy` executes it with its arguments in
`sys.argv`; while it runs, `torch.device('cuda:0')` gives the CPU, data loaders use no worker
processes, and the modules it imports for data and pictures are stand-ins: `datasets.FlowersDataset`
serves the photos below (split as tfseg splits a folder: `tfseg.data.folder.assign_splits`, images in
[-1, 1] and masks in {0, 1} as their loader returns them), torchvision's transforms and `save_image`
do nothing (the photos are already at the training size), scipy is not read. Their loop then trains,
evaluates and saves `state_%05d.pth` every `--eval_every` iterations as it always does.

This is a benchmark, never a test: it runs for tens of minutes. Needs torch (`pip install -e
'.[reference]'`) and the authors' code in shared/reference beside the repository (or TFSEG_REFERENCE).
"""
import argparse
import contextlib
import glob
import json
import os
import runpy
import subprocess
import sys
import time
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

REFERENCE = os.environ.get("TFSEG_REFERENCE", os.path.join(os.path.dirname(REPO), "shared", "reference"))
SIDES = ("authors", "tfseg")


# -- the photos, as both sides see them ------------------------------------------------------------
def load_photos(photos, masks, size):
    """`{split: (images uint8 [N, S, S, 3], masks float32 [N, S, S] or None)}`: train = every photo."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from tfseg.data.folder import assign_splits  # pylint: disable=import-outside-toplevel

    splits = assign_splits(photos, masks)
    everything = sorted(path for pairs in splits.values() for path, _ in pairs)

    def read(path, nearest):
        image = Image.open(path)
        image = image.convert("L" if nearest else "RGB")
        scale = size / min(image.size)
        if image.size != (size, size):  # their transforms: resize the shorter side, centre crop
            w, h = round(image.size[0] * scale), round(image.size[1] * scale)
            image = image.resize((w, h), Image.NEAREST)
            left, top = (w - size) // 2, (h - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image)

    out = {"train": (np.stack([read(p, False) for p in dict.fromkeys(everything)]), None)}
    for split in ("validation", "test"):
        pairs = splits.get(split, [])
        out[split] = (np.stack([read(p, False) for p, _ in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8),
                      np.stack([(read(m, True) > 127).astype(np.float32) for _, m in pairs]) if pairs
                      else np.zeros((0, size, size), np.float32))
    return out


# -- the authors' side ------------------------------------------------------------------------------
def _datasets_module(data, torch):
    """A stand-in for their `datasets` module: FlowersDataset over the arrays of `load_photos`."""
    split_of = {"train": "train", "val": "validation", "test": "test"}

    class FlowersDataset(torch.utils.data.Dataset):  # the one class their train.py reads for Flowers
        def __init__(self, dataPath, sets="train", transform=None):  # noqa: N803 (their signature)
            del dataPath, transform
            images, masks = data[split_of.get(sets, "test")]
            self.images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
            self.masks = (torch.zeros((len(images), 1) + images.shape[1:3]) if masks is None
                          else torch.from_numpy(masks)[:, None])

        def __len__(self):
            return len(self.images)

        def __getitem__(self, idx):
            return self.images[idx], self.masks[idx]

    module = types.ModuleType("datasets")
    module.FlowersDataset = FlowersDataset
    return module


def _inert_modules(torch):
    """Stand-ins for torchvision and scipy.io, which their script imports but, here, never needs."""
    class Transform:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, x):
            return x

    transforms = types.ModuleType("torchvision.transforms")
    transforms.Compose = transforms.Resize = transforms.CenterCrop = transforms.ToTensor = Transform
    utils = types.ModuleType("torchvision.utils")
    utils.save_image = lambda *args, **kwargs: None
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms, torchvision.utils = transforms, utils
    scipy = types.ModuleType("scipy")
    scipy.io = types.ModuleType("scipy.io")
    del torch
    return {"torchvision": torchvision, "torchvision.transforms": transforms,
            "torchvision.utils": utils, "scipy": scipy, "scipy.io": scipy.io}


@contextlib.contextmanager
def _authors_script_on_cpu(torch, modules):
    """While it lasts: CUDA devices are the CPU, loaders have no workers, Adam takes their integer
    beta (torch 1.0 did), `modules` are importable."""
    real_device, real_loader = torch.device, torch.utils.data.DataLoader

    class _DeviceType(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_device)

    class CpuDevice(metaclass=_DeviceType):  # torch.device('cuda:0') -> the CPU
        def __new__(cls, spec, *args):
            return real_device("cpu") if str(spec).startswith("cuda") else real_device(spec, *args)

    class Loader(real_loader):  # pylint: disable=too-few-public-methods
        def __init__(self, *args, **kwargs):
            kwargs["num_workers"] = 0
            super().__init__(*args, **kwargs)

    real_adam = torch.optim.Adam

    class Adam(real_adam):  # their betas=(0, 0.9): torch >= 2 wants both floats (same values)
        def __init__(self, params, *args, betas=(0.9, 0.999), **kwargs):
            super().__init__(params, *args, betas=tuple(float(b) for b in betas), **kwargs)

    saved = {name: sys.modules.get(name) for name in modules}
    torch.device, torch.utils.data.DataLoader, torch.optim.Adam = CpuDevice, Loader, Adam
    sys.modules.update(modules)
    try:
        yield
    finally:
        torch.device, torch.utils.data.DataLoader, torch.optim.Adam = real_device, real_loader, real_adam
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def run_authors(data, out, args):
    """Runs their train.py for `args.iterations`; returns `{iteration: minutes}` of its checkpoints."""
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    folder = os.path.join(REFERENCE, "ReDO")
    if not os.path.isdir(folder):
        raise SystemExit(f"The authors' ReDO code is not at {folder}; set TFSEG_REFERENCE.")
    os.makedirs(out, exist_ok=True)
    modules = dict(_inert_modules(torch), datasets=_datasets_module(data, torch))
    argv = ["train.py", "--dataset=flowers", "--dataroot=unused", f"--sizex={args.size}",
            f"--nf={args.nf}", f"--nfX={args.nf_generator or args.nf}", f"--batchSize={args.batch_size}",
            f"--nIteration={args.iterations - 1}", f"--checkpointFreq={args.eval_every}",
            f"--outf={out}", f"--manualSeed={args.seed}", f"--nTest={args.n_test}", "--silent"]
    argv += ["--useSelfAttD", "--useSelfAttG"] if args.self_attention else []
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, folder)
    start = time.time()
    try:
        with _authors_script_on_cpu(torch, modules):
            runpy.run_path(os.path.join(folder, "train.py"), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.modules.pop("models", None)
    minutes = {}
    for path in glob.glob(os.path.join(out, "state_*.pth")):
        iteration = int(os.path.basename(path)[6:-4])
        minutes[iteration] = (os.path.getmtime(path) - start) / 60
    return minutes


def score_authors(data, out, batch=64):
    """`{iteration: metrics}` of every saved `state_*.pth`'s mask network on the validation photos."""
    import torch  # pylint: disable=import-outside-toplevel
    from tfseg.evaluation.metrics import MaskMetrics  # pylint: disable=import-outside-toplevel
    folder = os.path.join(REFERENCE, "ReDO")
    sys.path.insert(0, folder)
    try:
        import models  # pylint: disable=import-outside-toplevel,import-error
    finally:
        sys.path.remove(folder)
        sys.modules.pop("models", None)
    images, masks = data["validation"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    scores = {}
    for path in sorted(glob.glob(os.path.join(out, "state_*.pth"))):
        state = torch.load(path, map_location="cpu", weights_only=False)
        opt = state["options"]
        net = models._netEncM(sizex=opt.sizex, nIn=opt.nx, nMasks=opt.nMasks, nRes=opt.nResM,  # pylint: disable=protected-access
                              nf=opt.nfM, temperature=opt.temperature)
        net.load_state_dict(state["netEncM"])
        net.eval()
        metrics = MaskMetrics()
        with torch.no_grad():
            for start in range(0, len(x), batch):
                pred = net(x[start:start + batch])[:, 0].numpy()
                metrics.update(pred, masks[start:start + batch])
        scores[int(os.path.basename(path)[6:-4])] = metrics.result()
    return scores


# -- tfseg's side -----------------------------------------------------------------------------------
def tfseg_bindings(args):
    """tfseg's ReDO in the authors' mode with the authors' script's arguments of `run_authors`: the
    method's settings are the ones `tools/convert_redo.py` derives from a checkpoint's options."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import convert_redo  # pylint: disable=import-outside-toplevel,import-error
    options = {"nf": args.nf, "nfX": args.nf_generator or args.nf, "sizex": args.size,
               "useSelfAttG": args.self_attention, "useSelfAttD": args.self_attention}
    settings = convert_redo.redo_settings(options)
    return [f"tfseg.methods.redo.{name} = {value!r}" for name, value in settings.items()] + [
        f"tfseg.training.TrainConfig.resolution = {args.size}",
        f"tfseg.training.TrainConfig.batch_size = {args.batch_size}",
        f"tfseg.training.TrainConfig.num_steps = {args.iterations}",
        f"tfseg.training.TrainConfig.eval_every = {args.eval_every}",
        f"tfseg.training.TrainConfig.checkpoint_every = {args.eval_every}",
        f"tfseg.training.TrainConfig.seed = {args.seed}",
        "tfseg.training.TrainConfig.collapse_threshold = 0.0",  # their --autoRestart 0
        f"tfseg.data.image_folder_source.image_dir = '{args.photos}'",
        f"tfseg.data.image_folder_source.mask_dir = '{args.masks}'",
        "tfseg.data.image_folder_source.mask_format = 'binary'",
        "tfseg.data.image_folder_source.mask_stem_replace = None",
        "tfseg.data.image_folder_source.validation_fraction = 0.5",
        "tfseg.data.image_folder_source.test_fraction = 0.5",
        "tfseg.data.image_folder_source.train_on_all_images = True",
    ]


def run_tfseg(out, args):
    """Trains tfseg (a subprocess, as a user runs it); returns `{step: (minutes, metrics)}`."""
    from tfseg.evaluation import curves  # pylint: disable=import-outside-toplevel
    command = [sys.executable, "-m", "tfseg.train", f"--gin_file={args.tfseg_gin}", f"--model_dir={out}"]
    command += [f"--gin_bindings={b}" for b in tfseg_bindings(args) + list(args.gin_bindings)]
    env = dict(os.environ, TF_NUM_INTEROP_THREADS=str(args.threads), TF_NUM_INTRAOP_THREADS=str(args.threads))
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return {step: (minutes, row) for step, minutes, row in curves.read_curve(out)}


# -- the comparison ---------------------------------------------------------------------------------
METRICS = ("best_perm_fg_iou", "fg_iou")


def _authors_row(result):
    """The two curves' metrics from a MaskMetrics result of the authors' mask network: the best region
    per image, and one region for the whole set chosen with the labels (as tfseg's logged fg_iou is
    the region chosen on validation)."""
    return {"best_perm_fg_iou": result["best_perm_fg_iou"], "fg_iou": result["dataset_perm_fg_iou"]}


def draw(curves, path, size=(560, 340), margin=44):
    """Validation best-permutation fg IoU against iterations, one line per side (pillow)."""
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
    width, height = size
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    last = max((it for rows in curves.values() for it in rows), default=1) or 1
    to_xy = lambda it, v: (margin + (width - 2 * margin) * it / last, height - margin - (height - 2 * margin) * v)
    pen.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for level in (0.25, 0.5, 0.75):
        y = to_xy(0, level)[1]
        pen.line([margin, y, width - margin, y], fill=(220, 220, 220))
        pen.text((4, y - 6), f"{level:.2f}", fill="black")
    colours = {"authors": (0, 90, 200), "tfseg": (200, 0, 0)}
    for n, (side, rows) in enumerate(sorted(curves.items())):
        points = [to_xy(it, row["best_perm_fg_iou"]) for it, row in sorted(rows.items())]
        if len(points) > 1:
            pen.line(points, fill=colours.get(side, "black"), width=2)
        for x, y in points:
            pen.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colours.get(side, "black"))
        pen.text((margin + 8, margin + 6 + 14 * n), f"{side}", fill=colours.get(side, "black"))
    pen.text((margin, 8), "ReDO, validation fg IoU (best region per image) vs iterations", fill="black")
    pen.text((width - margin - 70, height - margin + 8), f"{last} it", fill="black")
    image.save(path)


def table(curves, minutes):
    """A markdown table: iteration | per side: minutes, fg IoU with the best region per image and with
    one region chosen for the whole validation split."""
    sides = sorted(curves)
    head = "| iteration | " + " | ".join(f"{s} min | {s} fg IoU (best region per image / one region chosen)"
                                        for s in sides) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(sides))]
    for it in sorted({it for rows in curves.values() for it in rows}):
        cells = []
        for side in sides:
            row = curves[side].get(it)
            m = minutes.get(side, {}).get(it)
            cells.append("" if m is None else f"{m:.1f}")
            cells.append("" if row is None else f"{row['best_perm_fg_iou']:.3f} / {row['fg_iou']:.3f}")
        lines.append(f"| {it} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder of photos (all train)")
    parser.add_argument("--masks", required=True, help="folder of masks (255 = object) for validation")
    parser.add_argument("--out", required=True, help="folder for both runs and the comparison")
    parser.add_argument("--side", choices=SIDES + ("both",), default="both",
                        help="train one side only (the other side's results in --out are reused)")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--eval_every", type=int, default=250)
    parser.add_argument("--size", type=int, default=128, help="the authors' networks are 128 px only")
    parser.add_argument("--nf", type=int, default=16, help="width of every network (theirs: 64)")
    parser.add_argument("--nf_generator", type=int, default=None, help="the generators' width (default --nf)")
    parser.add_argument("--self_attention", action="store_true", help="their --useSelfAttD/G")
    parser.add_argument("--batch_size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n_test", type=int, default=5, help="test photos their script draws in its picture")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: score the runs already in --out and redraw the comparison")
    parser.add_argument("--tfseg_gin", default="gin_configs/redo_flowers.gin")
    parser.add_argument("--gin_bindings", action="append", default=[], help="more bindings for tfseg")
    args = parser.parse_args(argv)
    args.photos, args.masks, args.out = (os.path.abspath(p) for p in (args.photos, args.masks, args.out))
    return args


def _saved_minutes(record, side):
    """The minutes a side's checkpoints were written at, as its run recorded them (else none)."""
    saved = json.load(open(record)) if os.path.exists(record) else {}
    return {int(k): v for k, v in saved.get("minutes", {}).get(side, {}).items()}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    record = os.path.join(args.out, "curves.json")
    data = load_photos(args.photos, args.masks, args.size)
    too_few = {s: n for s, n in (("validation", args.batch_size), ("test", args.n_test)) if len(data[s][0]) < n}
    if too_few:  # their script drops incomplete batches: an empty validation pass divides by zero
        raise SystemExit(f"Too few labelled photos in {args.masks}: the authors' script needs at least "
                         f"{too_few} (validation: one batch, test: --n_test); label more or lower them.")
    print(f"photos: {len(data['train'][0])} train, {len(data['validation'][0])} validation, "
          f"{len(data['test'][0])} test", flush=True)
    curves, minutes = {}, {}
    if args.report_only:  # score what the runs in --out left, train nothing
        args.side = "none"
        authors, tfseg_dir = os.path.join(args.out, "authors"), os.path.join(args.out, "tfseg")
        if glob.glob(os.path.join(authors, "state_*.pth")):
            curves["authors"] = {it: _authors_row(row) for it, row in score_authors(data, authors).items()}
            minutes["authors"] = _saved_minutes(record, "authors")
        if os.path.isdir(os.path.join(tfseg_dir, "validation")):
            from tfseg.evaluation import curves as tb_curves  # pylint: disable=import-outside-toplevel
            rows = tb_curves.read_curve(tfseg_dir)
            curves["tfseg"] = {step: {k: row.get(k, float("nan")) for k in METRICS} for step, _, row in rows}
            minutes["tfseg"] = {step: m for step, m, _ in rows}
    if args.side in ("authors", "both"):
        minutes["authors"] = run_authors(data, os.path.join(args.out, "authors"), args)
        curves["authors"] = {it: _authors_row(row)
                             for it, row in score_authors(data, os.path.join(args.out, "authors")).items()}
    if args.side in ("tfseg", "both"):
        rows = run_tfseg(os.path.join(args.out, "tfseg"), args)
        minutes["tfseg"] = {step: m for step, (m, _) in rows.items()}
        curves["tfseg"] = {step: {k: row.get(k, float("nan")) for k in METRICS} for step, (_, row) in rows.items()}
    # The other side's results, read now: the two sides may run at the same time (--side).
    saved = json.load(open(record)) if os.path.exists(record) else {}
    for side in saved.get("curves", {}):
        if side not in curves:
            curves[side] = {int(k): v for k, v in saved["curves"][side].items()}
            minutes[side] = {int(k): v for k, v in saved["minutes"][side].items()}
    arguments = saved.get("arguments", {})
    arguments.update({side: vars(args) for side in SIDES if args.side in (side, "both")})
    with open(record, "w") as f:
        json.dump({"arguments": arguments, "curves": curves, "minutes": minutes}, f, indent=1)
    draw(curves, os.path.join(args.out, "parity.png"))
    text = table(curves, minutes)
    with open(os.path.join(args.out, "parity.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
