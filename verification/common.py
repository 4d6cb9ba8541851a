"""What the verification scripts share: the authors' code (copied from their git history or a checkout into a
temporary folder and imported from there; none of it is kept in this repository) and the shims it needs, the key
names of their networks against ours, the presets as composed configs, and reports that name no folder of the
machine that made them."""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # the package, installed or not

# ---------------------------------------------------------------- the authors' code


def add_authors_args(p, commit: str = "HEAD", required: bool = True) -> None:
    """``--authors-git-dir GIT_DIR [--commit C]`` or ``--authors-dir CHECKOUT``."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--authors-git-dir", help="git directory of github.com/Typal-Research/jacobian_free_backprop "
                                               "(bare is fine)")
    src.add_argument("--authors-dir", help="a checkout of it (a folder holding its files)")
    p.add_argument("--commit", default=commit, help=f"with --authors-git-dir: the commit to read (default {commit})")


def _git(git_dir: str, *args: str) -> str:
    try:
        return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True,
                              check=True).stdout
    except subprocess.CalledProcessError as e:
        last = e.stderr.strip().splitlines()[-1] if e.stderr.strip() else str(e)
        raise SystemExit(f"error: --authors-git-dir: git {' '.join(args)} failed ({last})")


def copy_files(a, files, folder: Path) -> str:
    """``files`` of ``a.commit`` in ``a.authors_git_dir`` (or of the checkout ``a.authors_dir``) written into
    ``folder``; returns where they came from, naming no folder of this machine."""
    names = "{" + ",".join(files) + "}"
    if a.authors_git_dir:
        rev = _git(a.authors_git_dir, "rev-parse", "--short", f"{a.commit}^{{commit}}").strip()
        for name in files:
            (folder / name).write_text(_git(a.authors_git_dir, "show", f"{rev}:{name}"))
        return f"{rev}:{names} from {PLACEHOLDERS['--authors-git-dir']}"
    for name in files:
        if not (Path(a.authors_dir) / name).is_file():
            raise SystemExit(f"error: --authors-dir={a.authors_dir!r} has no {name}")
        shutil.copy(Path(a.authors_dir) / name, folder / name)
    return f"{names} from {PLACEHOLDERS['--authors-dir']}"


@contextlib.contextmanager
def authors_modules(folder: Path, names):
    """Their modules imported from ``folder`` under their own names (their ``utils`` imports ``BatchCG``); what
    held those names in ``sys.modules`` before is put back afterwards."""
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        yield types.SimpleNamespace(**{n: importlib.import_module(n) for n in names})
    finally:
        sys.path.remove(str(folder))
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


class _Table:
    """Stands in for prettytable.PrettyTable (their code only prints it)."""

    def __init__(self, fields=()):
        self.rows = [list(fields)]

    def add_row(self, row):
        self.rows.append(list(row))

    def __str__(self):
        return "\n".join(" | ".join(str(c) for c in r) for r in self.rows)


def shims(notes: list) -> None:
    """What their code needs on today's libraries, each recorded in ``notes`` when used."""
    import numpy

    if not hasattr(numpy, "Inf"):
        numpy.Inf = numpy.inf
        notes.append("numpy.Inf aliased to numpy.inf (removed in NumPy 2; their code uses it)")
    try:
        import prettytable  # noqa: F401
    except ImportError:
        sys.modules["prettytable"] = types.SimpleNamespace(PrettyTable=_Table)
        notes.append("prettytable replaced by a minimal table (not installed; their utils prints a parameter table)")


WEIGHTS_ENV = "JFB_AUTHORS_WEIGHTS"  # the folder of the authors' released weights (their trained_networks/)


def add_weights_arg(p) -> None:
    p.add_argument("--weights-dir", default=os.environ.get(WEIGHTS_ENV),
                   help=f"folder of the authors' released .pth files (default ${WEIGHTS_ENV})")


def released_files(folder) -> list:
    """The ``*.pth`` files of the authors' ``trained_networks/`` in ``folder``, with their datasets (from the file
    names, which start with MNIST, SVHN or CIFAR10)."""
    if not folder:
        raise SystemExit(f"error: give --weights-dir or set {WEIGHTS_ENV} to the folder of the released .pth files")
    files = sorted(Path(folder).glob("*.pth"))
    if not files:
        raise SystemExit(f"error: --weights-dir={str(folder)!r} holds no .pth files")
    tags = (("CIFAR10", "cifar10"), ("SVHN", "svhn"), ("MNIST", "mnist"))
    out = []
    for f in files:
        ds = next((d for t, d in tags if f.name.upper().startswith(t)), None)
        if ds is None:
            raise SystemExit(f"error: cannot tell the dataset of {f.name!r} from its name (the released files "
                             "start with MNIST, SVHN or CIFAR10)")
        out.append((f, ds))
    return out


# ---------------------------------------------------------------- their key names against ours

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _apply(mapping: Dict[str, str], state: dict) -> dict:
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{mapping[module]}.{leaf}" if module in mapping else key] = value
    return out


def to_authors(variant, state: dict) -> dict:
    """Our state dict of a released network with the authors' key names (the inverse of
    :func:`jfb.models.authors.to_ours`)."""
    from jfb.models.authors import module_map

    return _apply({v: k for k, v in module_map(variant).items()}, state)


def expected_authors_shapes(variant) -> Dict[str, tuple]:
    """Key -> shape of the state dict b35a245's ``variant.code_class`` saves."""
    from jfb.models.authors import build_authors_model

    ours = build_authors_model(variant, channels_last=False).state_dict()
    return {k: tuple(v.shape) for k, v in to_authors(variant, ours).items()}


def untrained_parameters(content: dict, variant) -> Optional[list]:
    """The parameters (the authors' names) without Adam state in a released file: those that never received a
    gradient in the run that saved it. None when the optimizer state cannot be matched to the parameters (Adam
    keys its state by position in the parameter list, which follows the state dict's order)."""
    opt, state = content.get("optimizer_state_dict"), content.get(variant.state_key) or {}
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not opt.get("param_groups"):
        return None
    names = [k for k in state if not k.endswith(_BN_BUFFERS)]
    ids = [i for g in opt["param_groups"] for i in g.get("params", [])]
    if sorted(ids) != list(range(len(names))):
        return None
    return [names[i] for i in ids if i not in opt["state"]]


def paper_module_map(name: str, lat_layers: Optional[int] = None) -> Dict[str, str]:
    """Module names of the authors' latest ``MNIST_FPN``, ``SVHN_FPN``, ``CIFAR10_FPN`` -> ours, for the paper
    networks :func:`jfb.models.build_model` builds. MNIST and SVHN keep b35a245's names. CIFAR-10: their
    ``data_conv_d`` is our ``Q.conv_in``; ``data_convs[i]`` (convolutions at 0 and 3) with ``dat_batch_norm[i]``
    our ``Q.blocks[j]``, j = i + i // data_layers (our Q holds each AvgPool as a block); ``conv_y`` and
    ``label_fc`` our ``S.0`` and ``S.4``."""
    import dataclasses

    from jfb.models import MODELS
    from jfb.models.authors import VARIANTS, module_map

    lat_layers = MODELS[name].lat_layers if lat_layers is None else lat_layers
    if name in ("mnist", "svhn"):
        return module_map(dataclasses.replace(VARIANTS[(name, "jfb")], lat_layers=lat_layers))
    if name != "cifar10":
        raise ValueError(f"no authors' names for network {name!r}")
    from jfb.models.cifar10 import DATA_LAYERS

    m = {"data_conv_d": "Q.conv_in", "conv_y": "S.0", "label_fc": "S.4"}
    for i in range(2 * DATA_LAYERS):
        j = i + i // DATA_LAYERS
        m.update({f"data_convs.{i}.0": f"Q.blocks.{j}.conv1", f"data_convs.{i}.3": f"Q.blocks.{j}.conv2",
                  f"dat_batch_norm.{i}": f"Q.blocks.{j}.norm"})
    for i in range(lat_layers):
        m.update({f"latent_convs.{i}.0": f"R.blocks.{i}.conv1", f"latent_convs.{i}.3": f"R.blocks.{i}.conv2",
                  f"lat_batch_norm.{i}": f"R.norms.{i}"})
    return m


def paper_to_ours(name: str, state: dict, latent_bn: bool = True, lat_layers: Optional[int] = None) -> dict:
    """A state dict of the authors' latest ``name`` network with our key names; without ``latent_bn`` their
    unused latent batch-norm buffers (kept by ``architecture='Jacobian'``) go."""
    out = _apply(paper_module_map(name, lat_layers), state)
    return out if latent_bn else {k: v for k, v in out.items() if not k.startswith("R.norms.")}


def paper_to_authors(name: str, state: dict, lat_layers: Optional[int] = None) -> dict:
    """Our state dict with the key names of the authors' latest ``name`` network."""
    return _apply({v: k for k, v in paper_module_map(name, lat_layers).items()}, state)


# ---------------------------------------------------------------- presets


def compose(*overrides: str):
    """The checked config (:class:`jfb.training.config.RunConfig`) that ``jfb-train`` composes for
    ``overrides`` (e.g. ``experiment=paper/mnist method=ift``): the one source of the presets' values."""
    from jfb.training.config import compose as compose_dict
    from jfb.training.config import load

    return load(compose_dict(["logger=none", *overrides]))


# ---------------------------------------------------------------- reports

# What a report writes for a folder of the machine that made it.
PLACEHOLDERS = {"--authors-git-dir": "<authors-git-dir>", "--authors-dir": "<authors-checkout>",
                "--data-dir": "$DATA_DIR", "--weights-dir": "<weights-folder>", "--runs-dir": "<runs-folder>"}


def portable(path) -> str:
    """A path inside the repository relative to it; any other absolute path as ``<elsewhere>/NAME``."""
    p = os.path.abspath(path)
    if os.path.commonpath([p, str(ROOT)]) == str(ROOT):
        return os.path.relpath(p, ROOT)
    return f"<elsewhere>/{os.path.basename(p)}"


def command(script: str, argv) -> str:
    """The command line that ran ``script``, with :data:`PLACEHOLDERS` and :func:`portable` paths."""
    out, flag = [], None
    for arg in map(str, argv):
        key, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and key in PLACEHOLDERS:
            arg = f"{key}={PLACEHOLDERS[key]}"
        elif flag in PLACEHOLDERS:
            arg = PLACEHOLDERS[flag]
        elif os.path.isabs(arg):
            arg = portable(arg)
        out.append(arg)
        flag = arg if arg.startswith("--") and not eq else None
    return " ".join(["python", f"verification/{script}", *out])


def spread(xs) -> dict:
    """Median, quartiles, min, max and count of a sample."""
    xs = sorted(float(x) for x in xs)
    if not xs:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1], "n": len(xs)}


def fmt(s: dict, digits: int = 1) -> str:
    """``median [q1, q3]`` of a :func:`spread`."""
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}, {s['q3']:.{digits}f}]"


def jsonable(o):
    """``o`` with non-finite floats as strings (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    return str(o) if isinstance(o, float) and not math.isfinite(o) else o


def mnist_images(split: str, n: int, data_dir):
    """The first ``n`` real MNIST images of ``split`` (normalised as in training) and their labels, or None when
    ``data_dir`` does not hold MNIST."""
    if not data_dir:
        return None
    from jfb.data import DatasetNotFoundError, get_spec, load_torchvision

    try:
        images, labels = load_torchvision(get_spec("mnist"), split, data_dir)
    except DatasetNotFoundError:
        return None
    return images[:n].float().div(255).sub(0.1307).div(0.3081), labels[:n].clone()

