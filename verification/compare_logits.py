"""Logits of the authors' released weights: their b35a245 network against ours, same weights, same inputs.

    python verification/compare_logits.py --authors-git-dir GIT_DIR --weights-dir DIR [--commit b35a245]
        [--data-dir D] [--n 400] [--out results/authors_weights/logit_diffs.json] [--max-diff 1e-4]
    python verification/compare_logits.py --authors-dir CHECKOUT --weights-dir DIR ...

Their ``Networks.py`` and ``utils.py`` are copied to a temporary folder and imported from there. Every ``*.pth``
in DIR is read without running code from it (:func:`jfb.models.authors.read_authors_file`), loaded into the class
that saved it (strict ``load_state_dict``) and into our network (as ``jfb-evaluate --authors-weights`` builds
it), both in eval mode, and the logits are compared on the same inputs: MNIST on the first ``--n`` test images
when ``--data-dir`` has them (else random), SVHN and CIFAR-10 on ``--n`` random N(0, 1) 3x32x32 images. Their side
runs as their b35a245 code evaluated each kind of file: JFB files ``net(d, eps, max_depth)``, explicit files
``net(d)``, Jacobian-based files ``data_space_forward``, ``utils.compute_fixed_point`` and
``map_latent_to_inference`` (back in eval mode for S). b35a245's ``SVHN_FPN`` names its pieces ``_Q``/``_R``/``_S``
while its ``forward`` calls ``data_space_forward``/..., so those names are bound to the pieces (a recorded shim).

Writes a JSON (``--out``) that verification/weights_table.py reads; exits 1 if a difference exceeds ``--max-diff``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from common import add_authors_args, add_weights_arg, authors_modules, command, copy_files, released_files, \
    mnist_images, shims

FILES = ("Networks.py", "utils.py")
_ALIASES = (("data_space_forward", "_Q"), ("latent_space_forward", "_R"), ("map_latent_to_inference", "_S"))


def their_net(networks, variant):
    cls = getattr(networks, variant.code_class, None)
    if cls is None:
        raise SystemExit(f"error: their Networks.py has no class {variant.code_class}")
    kw = dict(res_layers=variant.lat_layers, num_channels=32 if variant.architecture == "mnist" else 64,
              contraction_factor=variant.gamma)
    if variant.architecture == "svhn":
        kw.update(block=networks.BasicBlock, num_blocks=[1, 1, 1])
    return cls(**kw)


def their_logits(net, utils, variant, d, notes: list):
    """Their eval-mode logits and solver iterations, as their b35a245 code evaluated this kind of file."""
    import torch

    for name, piece in _ALIASES:
        if not hasattr(net, name) and hasattr(net, piece):
            setattr(net, name, getattr(net, piece))
            note = f"{variant.code_class}: {name} bound to its {piece}"
            notes += [note] if note not in notes else []
    net.eval()
    with torch.no_grad():
        if variant.method == "explicit":
            return net(d), None
        if variant.method == "jfb":
            return net(d, eps=variant.tol, max_depth=variant.max_iter), int(net.depth)
        u, depth = utils.compute_fixed_point(net, net.data_space_forward(d), variant.max_iter, d.device,
                                             eps=variant.tol)
        net.eval()  # their compute_fixed_point leaves the network in training mode
        return net.map_latent_to_inference(u), int(depth)


def inputs(variant, n: int, data_dir, seed: int):
    import torch

    real = mnist_images("test", n, data_dir) if variant.dataset == "mnist" else None
    if real is not None:
        return real[0], f"MNIST test images 1-{len(real[0])}"
    shape = (1, 28, 28) if variant.architecture == "mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), f"random N(0,1) {n}x{'x'.join(map(str, shape))}, seed {seed}"


def compare(a) -> dict:
    import torch

    from jfb.env import hardware
    from jfb.models.authors import AUTHORS_COMMIT, AuthorsFileError, build_authors_model, identify, \
        read_authors_file, to_ours

    if a.threads:
        torch.set_num_threads(a.threads)
    files = released_files(a.weights_dir)
    notes, rows = [], []
    with tempfile.TemporaryDirectory(prefix="authors_code_") as tmp:
        source = copy_files(a, FILES, Path(tmp))
        shims(notes)
        with authors_modules(Path(tmp), ("Networks", "utils")) as mods:
            for f, dataset in files:
                try:
                    content = read_authors_file(str(f))
                    variant = identify(str(f), content, dataset)
                except AuthorsFileError as e:
                    raise SystemExit(f"error: {e}")
                state = content[variant.state_key]
                ours = build_authors_model(variant)
                ours.load_state_dict(to_ours(variant, state), strict=True)
                ours.eval()
                theirs = their_net(mods.Networks, variant)
                theirs.load_state_dict(state, strict=True)
                x, described = inputs(variant, a.n, a.data_dir, a.seed)
                torch.manual_seed(a.seed)  # their compute_fixed_point draws noise for its Lipschitz probe
                y_theirs, it_theirs = their_logits(theirs, mods.utils, variant, x, notes)
                with torch.no_grad():
                    y_ours, stats = ours(x)
                agree = int((y_ours.argmax(1) == y_theirs.argmax(1)).sum())
                row = {"file": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                       "code_class": variant.code_class, "method": variant.method, "inputs": described,
                       "max_abs_diff": float((y_ours - y_theirs).abs().max()),
                       "max_abs_logit": float(y_theirs.abs().max()), "argmax_agree": f"{agree}/{len(x)}",
                       "their_iters": it_theirs, "our_iters": None if stats is None else stats.fwd_iters}
                rows.append(row)
                print(f"{f.name:58s} {variant.code_class:34s} max |diff| {row['max_abs_diff']:.2e}  argmax "
                      f"{row['argmax_agree']}  iterations theirs {it_theirs} ours {row['our_iters']}  ({described})",
                      flush=True)
    for n in notes:
        print(f"note: {n}")
    return {"commit": AUTHORS_COMMIT, "their_code": source, "notes": notes, "hardware": hardware(torch.device("cpu")),
            "command": command("compare_logits.py", a.argv), "files": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_authors_args(p, commit="b35a245")
    add_weights_arg(p)
    p.add_argument("--data-dir", help="data root with MNIST (real MNIST inputs for the MNIST files)")
    p.add_argument("--n", type=int, default=400, help="inputs per file (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--out", help="write the measurements as JSON here")
    p.add_argument("--max-diff", type=float, default=1e-4, help="exit 1 if a max |diff| exceeds this (default 1e-4)")
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else argv
    if a.n < 1:
        p.error(f"--n={a.n} must be >= 1")
    result = compare(a)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.out}")
    worst = max(r["max_abs_diff"] for r in result["files"])
    if not worst <= a.max_diff:
        print(f"error: largest logit difference {worst:.3e} exceeds --max-diff {a.max_diff:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
