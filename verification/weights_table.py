"""The table of the authors' released weights: every file of a folder evaluated by ``jfb-evaluate``'s code.

    python verification/weights_table.py --weights-dir DIR --out results/authors_weights [--data-dir D]
        [--logit-diffs results/authors_weights/logit_diffs.json] [--also-train-mode] [--batch-size 400]

Each ``*.pth`` in DIR is loaded into our network in the configuration of the class that saved it and evaluated on
the test set (:func:`jfb.evaluate.evaluate_authors`: eval mode, the driver's tolerance and iteration cap; with
``--also-train-mode`` in training mode too). A file whose dataset is not in ``--data-dir`` is still loaded (its
parameter count checked) and listed as "missing: no data". ``--logit-diffs`` is the JSON of
verification/compare_logits.py; a row takes its figure only when the file's SHA-256 matches. Writes README.md and
authors_weights.csv into OUT.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from common import add_weights_arg, command, portable, released_files, untrained_parameters

_DATASET_ORDER = {"mnist": 0, "svhn": 1, "cifar10": 2}
_METHOD_ORDER = {"jfb": 0, "explicit": 1, "jacobian": 2}


def evaluate_file(path: Path, dataset: str, a, device) -> dict:
    """A row of the table: the file, the variant that saved it, its never-trained parameters, the figures."""
    from jfb.data import DatasetNotFoundError
    from jfb.evaluate import evaluate_authors
    from jfb.models.authors import identify, load_authors_weights, read_authors_file

    content = read_authors_file(str(path))
    variant = identify(str(path), content, dataset)
    row = {"variant": asdict(variant), "untrained": untrained_parameters(content, variant), "missing": None,
           "eval": None, "train_mode": None}
    try:
        r = evaluate_authors(str(path), dataset, a.data_dir, device, a.batch_size, a.also_train_mode)
    except DatasetNotFoundError as e:  # loaded all the same: keys, shapes and the parameter count are checked
        model = load_authors_weights(str(path), dataset)[0]
        hist = content.get("test_acc_hist") or []
        return dict(row, file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), dataset=dataset,
                    network=variant.describe(), params=sum(p.numel() for p in model.parameters()),
                    recorded_acc=float(hist[-1]) if hist else None, recorded_epochs=len(hist), missing=str(e))
    return {**row, **r, "eval": r["eval"].as_dict(),
            "train_mode": r["train_mode"].as_dict() if "train_mode" in r else None}


def _hardware(h) -> str:
    if isinstance(h, str):
        return h
    return f"{h['device_name']}" + (" (GPU)" if str(h.get("device", "")).startswith("cuda") else "")


def _versions(h) -> str:
    return ", ".join(f"{k} {v}" for k, v in h["versions"].items()) if isinstance(h, dict) else ""


def write_csv(path: Path, rows: list, hw: str, ver: str, cmd: str) -> None:
    cols = ["file", "sha256", "dataset", "code_class", "driver", "network_and_settings", "parameters",
            "recorded_acc", "recorded_epochs", "eval_acc", "eval_loss", "eval_iters_mean", "eval_iters_max",
            "eval_capped_frac", "train_mode_acc", "train_mode_loss", "never_trained", "max_logit_diff",
            "logit_inputs", "status", "hardware", "versions", "command"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            e, t, d, u = r["eval"] or {}, r["train_mode"] or {}, r.get("logits") or {}, r["untrained"]
            w.writerow({
                "file": r["file"], "sha256": r["sha256"], "dataset": r["dataset"],
                "code_class": r["variant"]["code_class"], "driver": r["variant"]["driver"],
                "network_and_settings": r["network"], "parameters": r["params"], "recorded_acc": r["recorded_acc"],
                "recorded_epochs": r["recorded_epochs"], "eval_acc": e.get("accuracy"), "eval_loss": e.get("loss"),
                "eval_iters_mean": e.get("iters_mean"), "eval_iters_max": e.get("iters_max"),
                "eval_capped_frac": e.get("capped_frac"), "train_mode_acc": t.get("accuracy"),
                "train_mode_loss": t.get("loss"), "never_trained": "" if u is None else " ".join(u),
                "max_logit_diff": d.get("max_abs_diff"), "logit_inputs": d.get("inputs"),
                "status": "missing: no data" if r["missing"] else "evaluated", "hardware": hw, "versions": ver,
                "command": cmd})


def readme(rows, hw, ver, cmd, also_train_mode, logit_diffs, meta) -> str:
    from jfb.evaluate import TRAIN_MODE_LABEL
    from jfb.models.authors import AUTHORS_COMMIT

    L = ["# The authors' released weights, evaluated here", "",
         f"Every file of the authors' `trained_networks/` was saved by their commit `{AUTHORS_COMMIT}`; each is loaded "
         "(with `torch.load(weights_only=True)` and an allow-list, no code run) into our network in the configuration "
         "of the class that saved it (`src/jfb/models/authors.py`) and evaluated on the test set in eval mode, with "
         "the tolerance and iteration cap of the driver that trained it. \"recorded\" is the last entry of the file's "
         "`test_acc_hist` (the files were saved at their best test epoch). The max logit difference is against the "
         f"authors' own network built from `{AUTHORS_COMMIT}:Networks.py` with the same weights and inputs, in eval "
         "mode (`verification/compare_logits.py`).", "",
         "| file | network and settings (code definition) | parameters | recorded (%) | eval mode, ours (%) | "
         + ("train mode, ours (%) | " if also_train_mode else "")
         + "solver iterations, eval (mean / max, capped share) | max logit difference vs their code |",
         "|---|---|---:|---:|---:|" + ("---:|" if also_train_mode else "") + "---|---|"]
    for r in rows:
        e, t, missing = r["eval"], r["train_mode"], "missing: no data"
        iters = "" if r["missing"] else ("explicit" if e["iters_mean"] is None else
                                         f"{e['iters_mean']:.1f} / {e['iters_max']}, {e['capped_frac']:.2f}")
        rec = f"{r['recorded_acc']:.2f} ({r['recorded_epochs']} epochs)" if r["recorded_acc"] is not None else ""
        cells = [f"`{r['file']}`", r["network"], f"{r['params']:,}", rec, missing if r["missing"] else
                 f"{e['accuracy']:.2f}"]
        if also_train_mode:
            cells.append(missing if r["missing"] else f"{t['accuracy']:.2f}" if t else "")
        d = r.get("logits")
        cells += [iters, "not measured" if d is None else f"{d['max_abs_diff']:.1e} ({d['inputs']})"]
        L.append("| " + " | ".join(cells) + " |")
    L += ["", f"Hardware: {hw}. Versions: {ver}.", "", "Produced by:", "", "```", cmd, "```", ""]
    if meta:
        L += [f"Logit differences: `{logit_diffs}`, measured on {_hardware(meta.get('hardware'))}, their code from "
              f"{meta.get('their_code')}, by:", "", "```", str(meta.get("command")), "```", ""]
        if meta.get("notes"):
            L += ["Shims the comparison needed to run their code: " + "; ".join(meta["notes"]) + ".", ""]
    L += ["Notes:", ""]
    for r in rows:
        if not r["missing"] and r["recorded_acc"] is not None:
            gaps = [f"eval mode {r['eval']['accuracy'] - r['recorded_acc']:+.2f} pp"]
            if r["train_mode"]:
                gaps.append(f"train mode {r['train_mode']['accuracy'] - r['recorded_acc']:+.2f} pp")
            L.append(f"- `{r['file']}`: ours minus recorded: {', '.join(gaps)}.")
    if also_train_mode:
        L.append(f"- {TRAIN_MODE_LABEL[0].upper() + TRAIN_MODE_LABEL[1:]}: batch normalisation uses each test batch's "
                 "statistics and dropout is on, as the authors' HEAD `get_stats` evaluates (it never calls "
                 "`net.eval()`). The b35a245 Jacobian-based drivers' `get_test_stats` call `net.eval()` once, but "
                 "`utils.compute_fixed_point` ends with `T.train()`, so S on every batch, and Q from the second batch "
                 "on, ran in training mode when those files' figures were recorded.")
    for untrained, files in group_untrained(rows).items():
        L.append(f"- No Adam state for: {untrained}; in {', '.join(f'`{f}`' for f in files)}: these parameters "
                 "never received a gradient in the runs that saved them.")
    L.append("- JFB rows: b35a245's `get_stats` capped the evaluation solve at the running average of the training "
             "depth, which the files do not record; the driver's `max_depth` is used here.")
    return "\n".join(L) + "\n"


def group_untrained(rows) -> dict:
    """Description of the never-trained parameters -> files, naming the part of the network they belong to."""
    from jfb.models.authors import VARIANTS, module_map

    parts = {"Q": "Q", "R": "the latent convolutions", "S": "S, the classifier",
             "unused": "the two batch norms defined but never used in the forward pass"}
    groups: dict = {}
    for r in rows:
        if r["untrained"]:
            mapping = module_map(VARIANTS[(r["dataset"], r["variant"]["method"])])
            where: dict = {}
            for name in r["untrained"]:
                ours = mapping.get(name.rpartition(".")[0], "?")
                where.setdefault(parts.get(ours.split(".")[0], ours), []).append(name)
            text = "; ".join(f"{part} ({', '.join(names)})" for part, names in where.items())
            groups.setdefault(text, []).append(r["file"])
    return groups


def main(argv=None) -> list:
    import torch

    from jfb.env import hardware, resolve_device

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_weights_arg(p)
    p.add_argument("--out", required=True, help="where README.md and authors_weights.csv go")
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"), help="data root")
    p.add_argument("--logit-diffs", metavar="JSON", help="verification/compare_logits.py output")
    p.add_argument("--also-train-mode", action="store_true", help="also evaluate in training mode (labelled so)")
    p.add_argument("--batch-size", type=int, default=400, help="test batch (default 400)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    diffs, meta = {}, {}
    if a.logit_diffs:
        try:
            meta = json.loads(Path(a.logit_diffs).read_text())
            diffs = {r["sha256"]: r for r in meta["files"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: --logit-diffs={a.logit_diffs!r} is not a compare_logits.py JSON ({e})")
    rows = []
    for f, dataset in released_files(a.weights_dir):
        r = evaluate_file(f, dataset, a, device)
        r["logits"] = diffs.get(r["sha256"])
        rows.append(r)
        print(f"{f.name}: " + ("missing: no data" if r["missing"] else f"accuracy {r['eval']['accuracy']:.2f} %"),
              flush=True)
    rows.sort(key=lambda r: (_DATASET_ORDER[r["dataset"]], _METHOD_ORDER[r["variant"]["method"]]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    h = hardware(device)
    hw, ver = _hardware(h), _versions(h)
    cmd = command("weights_table.py", sys.argv[1:] if argv is None else argv)
    logit_diffs = None if a.logit_diffs is None else portable(a.logit_diffs)
    write_csv(out / "authors_weights.csv", rows, hw, ver, cmd)
    (out / "README.md").write_text(readme(rows, hw, ver, cmd, a.also_train_mode, logit_diffs, meta))
    print(f"wrote {out / 'README.md'} and {out / 'authors_weights.csv'}")
    return rows


if __name__ == "__main__":
    main()
