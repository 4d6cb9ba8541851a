"""Logits of the authors' released weights: their b35a245 network against ours, same weights, same inputs.

Usage::

    python scripts/compare_authors_logits.py --authors-git-dir GIT_DIR --weights-dir DIR [--commit b35a245]
        [--data-dir D] [--n 400] [--out results/authors_weights/logit_diffs.json] [--max-diff 1e-4]
    python scripts/compare_authors_logits.py --authors-checkout CHECKOUT --weights-dir DIR ...

GIT_DIR is a (bare) git directory of github.com/Typal-Research/jacobian_free_backprop; its
``Networks.py`` and ``utils.py`` at ``--commit`` are written to a temporary folder and imported
from there (CHECKOUT: a folder holding those two files, copied the same way). This file holds none
of their code.

For every ``*.pth`` in DIR: the file is read without running code
(:func:`jfb.models.authors.read_authors_file`), loaded into the class that saved it (built from their
``Networks.py``, strict ``load_state_dict``) and into our network (:mod:`jfb.models.authors`, as
``python -m jfb.evaluate`` builds it), both in eval mode, and the logits are compared on the same
inputs: MNIST on the first ``--n`` test images when ``--data-dir`` has them (else random), SVHN and
CIFAR-10 on ``--n`` random N(0, 1) images of shape 3x32x32. Their side runs as their b35a245 code
evaluated each kind of file:

* JFB files: ``net(d, eps, max_depth)`` (their ``get_stats`` path), with the driver's eps/max_depth;
* explicit files: ``net(d)``;
* Jacobian-based files: their driver's ``get_test_stats`` path, ``data_space_forward``, then
  ``utils.compute_fixed_point(net, Qd, max_depth, device, eps)``, then ``map_latent_to_inference``
  (``compute_fixed_point`` leaves the net in training mode; it is put back in eval mode for S).

Shims, each printed when used: NumPy 2 has no ``np.Inf`` (their forward uses it), so it is aliased
to ``np.inf``; ``prettytable`` (imported by their utils for a parameter table) is stubbed if not
installed; b35a245's ``SVHN_FPN`` names its pieces ``_Q``/``_R``/``_S`` while its ``forward`` calls
``data_space_forward``/``latent_space_forward``/``map_latent_to_inference``, so those names are
bound to the pieces on the instance.

Writes a JSON (``--out``) that ``python -m jfb.evaluate --write-table --logit-diffs`` reads, and exits
1 if any difference exceeds ``--max-diff``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shlex
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from authors_files import copy_files  # noqa: E402  (scripts/authors_files.py)

FILES = ("Networks.py", "utils.py")
_ALIASES = (("data_space_forward", "_Q"), ("latent_space_forward", "_R"), ("map_latent_to_inference", "_S"))


def materialise(a, folder: Path) -> str:
    """Their Networks.py and utils.py in ``folder``; returns where they came from."""
    return copy_files(FILES, folder, a.authors_git_dir, a.commit, a.authors_checkout, "--authors-checkout", short=False)


def shims(notes: list) -> None:
    import numpy

    if not hasattr(numpy, "Inf"):
        numpy.Inf = numpy.inf
        notes.append("numpy.Inf aliased to numpy.inf (removed in NumPy 2; their forward uses it)")
    try:
        import prettytable  # noqa: F401
    except ImportError:
        stub = types.ModuleType("prettytable")
        stub.PrettyTable = None
        sys.modules["prettytable"] = stub
        notes.append("prettytable stubbed (not installed; their utils imports it for a parameter table)")


def import_from(folder: Path, name: str, alias: str):
    spec = importlib.util.spec_from_file_location(alias, folder / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def their_net(networks, variant):
    cls = getattr(networks, variant.code_class, None)
    if cls is None:
        raise SystemExit(f"error: their Networks.py has no class {variant.code_class}")
    kwargs = dict(res_layers=variant.lat_layers, num_channels=32 if variant.architecture == "mnist" else 64,
                  contraction_factor=variant.gamma)
    if variant.architecture == "svhn":
        kwargs.update(block=networks.BasicBlock, num_blocks=[1, 1, 1])
    return cls(**kwargs)


def their_logits(net, utils, variant, d, notes: list):
    """Their eval-mode logits and solver iterations, as their b35a245 code evaluated this kind of file."""
    import torch

    for name, piece in _ALIASES:
        if not hasattr(net, name) and hasattr(net, piece):
            setattr(net, name, getattr(net, piece))
            note = f"{variant.code_class}: {name} bound to its {piece}"
            if note not in notes:
                notes.append(note)
    net.eval()
    with torch.no_grad():
        if variant.method == "explicit":
            return net(d), None
        if variant.method == "jfb":
            y = net(d, eps=variant.tol, max_depth=variant.max_iter)
            return y, int(net.depth)
        Qd = net.data_space_forward(d)
        u, depth = utils.compute_fixed_point(net, Qd, variant.max_iter, d.device, eps=variant.tol)
        net.eval()
        return net.map_latent_to_inference(u), int(depth)


def inputs(variant, n: int, data_dir, seed: int):
    import torch

    if variant.dataset == "mnist" and data_dir:
        from jfb.data import DatasetNotFoundError, get_spec, load_torchvision

        try:
            images, _ = load_torchvision(get_spec("mnist"), "test", data_dir)
        except DatasetNotFoundError:
            pass
        else:
            images = images[:n]
            x = images.to(torch.float32).div(255).sub(0.1307).div(0.3081)
            return x, f"MNIST test images 1-{len(x)}"
    shape = (1, 28, 28) if variant.architecture == "mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), f"random N(0,1) {n}x{'x'.join(map(str, shape))}, seed {seed}"


def compare(a) -> dict:
    import torch

    from jfb.evaluate import _dataset_of, hardware, versions
    from jfb.models.authors import AuthorsFileError, build_authors_model, identify, read_authors_file, to_ours

    if a.threads:
        torch.set_num_threads(a.threads)
    files = sorted(Path(a.weights_dir).glob("*.pth"))
    if not files:
        raise SystemExit(f"error: --weights-dir={a.weights_dir!r} holds no .pth files")
    notes: list = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="authors_code_") as tmp:
        source = materialise(a, Path(tmp))
        shims(notes)
        networks = import_from(Path(tmp), "Networks.py", "authors_networks")
        utils = import_from(Path(tmp), "utils.py", "authors_utils")
        for f in files:
            try:
                content = read_authors_file(str(f))
                variant = identify(str(f), content, _dataset_of(f.name))
            except AuthorsFileError as e:
                raise SystemExit(f"error: {e}")
            state = content[variant.state_key]
            ours = build_authors_model(variant)
            ours.load_state_dict(to_ours(variant, state), strict=True)
            ours.eval()
            theirs = their_net(networks, variant)
            theirs.load_state_dict(state, strict=True)
            x, described = inputs(variant, a.n, a.data_dir, a.seed)
            torch.manual_seed(a.seed)  # their compute_fixed_point draws noise for its Lipschitz probe
            y_theirs, it_theirs = their_logits(theirs, utils, variant, x, notes)
            with torch.no_grad():
                y_ours, stats = ours(x)
            diff = float((y_ours - y_theirs).abs().max())
            agree = int((y_ours.argmax(1) == y_theirs.argmax(1)).sum())
            row = {"file": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                   "code_class": variant.code_class, "method": variant.method, "inputs": described,
                   "max_abs_diff": diff, "max_abs_logit": float(y_theirs.abs().max()),
                   "argmax_agree": f"{agree}/{len(x)}",
                   "their_iters": it_theirs, "our_iters": None if stats is None else stats.fwd_iters}
            rows.append(row)
            print(f"{f.name:58s} {variant.code_class:34s} max |diff| {diff:.2e}  argmax {row['argmax_agree']}  "
                  f"iterations theirs {it_theirs} ours {row['our_iters']}  ({described})", flush=True)
    for n in notes:
        print(f"note: {n}")
    from jfb.models.authors import AUTHORS_COMMIT

    return {"commit": AUTHORS_COMMIT, "their_code": source, "notes": notes, "hardware": hardware(torch.device("cpu")),
            "versions": versions(), "command": "python scripts/compare_authors_logits.py " + shlex.join(sys.argv[1:]),
            "files": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--authors-git-dir", help="git directory of their repository (bare is fine)")
    src.add_argument("--authors-checkout", help="a folder holding their Networks.py and utils.py")
    p.add_argument("--commit", default="b35a245", help="with --authors-git-dir: the commit to read (default b35a245)")
    p.add_argument("--weights-dir", required=True, help="folder of the released .pth files")
    p.add_argument("--data-dir", help="data root with MNIST (real MNIST inputs for the MNIST files)")
    p.add_argument("--n", type=int, default=400, help="inputs per file (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--out", help="write the measurements as JSON here")
    p.add_argument("--max-diff", type=float, default=1e-4, help="exit 1 if a max |diff| exceeds this (default 1e-4)")
    a = p.parse_args(argv)
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
