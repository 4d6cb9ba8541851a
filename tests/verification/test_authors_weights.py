"""The authors' released weights: ``jfb-evaluate --authors-weights``, verification/compare_logits.py and
verification/weights_table.py, end to end, and the key maps of verification/common.py.

The authors' side is a stand-in written for these tests (tests/verification/authors_standin.py: their MNIST
classes' interfaces, none of their code); the data are fake MNIST files in the real idx format
(tests/fakedata.py). Figures are checked against the stand-in network's own logits. The tests on the real released
files read the folder named by the environment variable JFB_AUTHORS_WEIGHTS (the authors' ``trained_networks/``);
without it they are skipped.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from authors_standin import FILES, save_release_file, write_code, write_weights
from common import WEIGHTS_ENV, expected_authors_shapes, released_files, to_authors, untrained_parameters
from fakedata import write_mnist
from test_evaluate import cli, main_inprocess, normalise  # jfb-evaluate, as tests/test_evaluate.py runs it
from jfb.models import authors as A
from jfb.models import svhn

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "verification" / "compare_logits.py"
TABLE = ROOT / "verification" / "weights_table.py"
N_TEST = 72
RELEASED = os.environ.get(WEIGHTS_ENV)
needs_released = pytest.mark.skipif(
    not (RELEASED and Path(RELEASED).is_dir()),
    reason=f"needs the authors' released weights: set {WEIGHTS_ENV} to a folder of their trained_networks/*.pth "
           "files (github.com/Typal-Research/jacobian_free_backprop; verification/README.md)")

pytestmark = pytest.mark.usefixtures("one_thread")


def run(args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Stand-in code, the three MNIST release files, fake MNIST data."""
    root = tmp_path_factory.mktemp("release")
    code = write_code(root / "code")
    nets = write_weights(code, root / "weights", seed=3)
    data = write_mnist(root / "data", n_train=16, n_test=N_TEST, seed=5)
    utils = import_code_utils(code)
    return {"root": root, "code": code, "weights": root / "weights", "nets": nets, "data_dir": root / "data",
            "test": data["test"], "utils": utils}


def import_code_utils(folder):
    import importlib.util

    spec = importlib.util.spec_from_file_location("standin_utils", Path(folder) / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def standin_figures(release, name: str, batch: int) -> dict:
    """What the stand-in (the authors' interfaces) gives in eval mode, batch by batch, as their
    b35a245 code evaluated each kind of file."""
    net = release["nets"][name].eval()
    images, labels = release["test"]
    x_all, y_all = normalise(torch.as_tensor(images)), torch.as_tensor(labels)
    loss, correct, iters = 0.0, 0, []
    with torch.no_grad():
        for s in range(0, len(y_all), batch):
            x, y = x_all[s:s + batch], y_all[s:s + batch]
            if "Explicit" in name:
                logits = net(x)
            elif "Jacobian" in name:
                u, depth = release["utils"].compute_fixed_point(net, net.data_space_forward(x), 50, "cpu", eps=0.1)
                net.eval()
                logits = net.map_latent_to_inference(u)
                iters.append(int(depth))
            else:
                logits = net(x, eps=0.1, max_depth=50)
                iters.append(int(net.depth))
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return {"accuracy": 100.0 * correct / len(y_all), "loss": loss / len(y_all),
            "iters_mean": sum(iters) / len(iters) if iters else None, "iters_max": max(iters) if iters else None}


# ---------------------------------------------------------------- the model side


def test_disconnected_latent_operator_is_gamma_times_u_plus_v():
    torch.manual_seed(0)
    R = A.DisconnectedLatentR(8, 1, 0.9, latent_bn=False).double()
    u, v = torch.randn(3, 8, 5, 5, dtype=torch.float64), torch.randn(3, 8, 5, 5, dtype=torch.float64)
    before = R(u, v)
    with torch.no_grad():
        for conv in R.latent_convs():
            conv.weight.normal_()
            conv.bias.normal_()
    assert torch.equal(before, 0.9 * (u + v))
    assert torch.equal(R(u, v), before)  # the convolutions have no effect
    with pytest.raises(ValueError, match="no latent batch norm"):
        A.DisconnectedLatentR(8, 1, 0.9, latent_bn=True)


@pytest.mark.parametrize("key", sorted(A.VARIANTS))
def test_variant_parameter_counts_and_key_round_trip(key):
    v = A.VARIANTS[key]
    model = A.build_authors_model(v, channels_last=False)
    assert model.num_params() == v.num_params
    assert isinstance(model.R, A.DisconnectedLatentR) == (v.method == "jacobian")
    ours = model.state_dict()
    theirs = to_authors(v, ours)
    assert A.to_ours(v, theirs).keys() == ours.keys()
    assert expected_authors_shapes(v) == {k: tuple(t.shape) for k, t in theirs.items()}
    assert not any(k.startswith(("Q.", "R.", "S.", "unused.")) for k in theirs)
    assert any(k.startswith("latent_convs.0.3.") for k in theirs)
    assert ("lat_batch_norm.0.running_mean" in theirs) == v.latent_bn


def test_untrained_parameters_are_the_ones_without_adam_state(release, tmp_path):
    from authors_standin import import_code

    net = import_code(release["code"], "standin_untrained").MNIST_FPN_Adjoint(1, 32, 0.9)
    opt = torch.optim.Adam(net.parameters())
    for name, p in net.named_parameters():
        p.grad = torch.ones_like(p) if name.startswith(("conv_d", "bn_")) else None
    opt.step()
    path = tmp_path / "MNIST_FPN_Jacobian_Based_weights_1.00.pth"
    torch.save({"T_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict()}, path)
    content = A.read_authors_file(str(path))
    variant = A.identify(str(path), content, "mnist")
    assert untrained_parameters(content, variant) == [
        "latent_convs.0.0.weight", "latent_convs.0.0.bias", "latent_convs.0.3.weight", "latent_convs.0.3.bias",
        "conv_y.weight", "conv_y.bias", "fc_y.weight"]
    assert untrained_parameters({**content, "optimizer_state_dict": None}, variant) is None


def test_svhn_S_dropout_is_a_parameter_with_the_paper_default():
    assert svhn.make_S()[2].p == 0.2
    assert svhn.make_S(0.1)[2].p == 0.1
    unaugmented = A.build_authors_model(A.VARIANTS[("cifar10", "jfb")], channels_last=False)
    assert unaugmented.S[2].p == 0.1


@needs_released
def test_released_files_load_into_our_networks():
    files = released_files(RELEASED)
    for path, dataset in files:
        name = path.name
        content = A.read_authors_file(str(path))
        model, variant, _ = A.load_authors_weights(str(path), dataset)
        assert model.num_params() == variant.num_params
        assert expected_authors_shapes(variant) == {k: tuple(v.shape) for k, v in content[variant.state_key].items()}
        assert (variant.method == "jacobian") == ("Jacobian_Based" in name)
        assert (variant.method == "explicit") == ("Explicit" in name)
        assert untrained_parameters(content, variant) is not None


# ---------------------------------------------------------------- the comparison script


@pytest.fixture(scope="module")
def compared(release):
    """The comparison script run once on the stand-in checkout and the three files."""
    out = release["root"] / "diffs.json"
    r = run([SCRIPT, "--authors-dir", release["code"], "--weights-dir", release["weights"], "--data-dir",
             release["data_dir"], "--n", 40, "--threads", 1, "--out", out])
    return r, out


def test_compare_script_matches_the_standin_from_a_checkout(release, compared):
    r, out = compared
    assert r.returncode == 0, r.stderr
    rows = {row["file"]: row for row in json.loads(out.read_text())["files"]}
    assert set(rows) == {name for name, _, _ in FILES}
    for name, row in rows.items():
        assert row["max_abs_diff"] < 1e-4, row
        assert row["max_abs_logit"] > 0.1, row  # not trivially zero logits
        assert row["argmax_agree"] == "40/40"
        assert row["inputs"] == "MNIST test images 1-40"
        assert row["their_iters"] == row["our_iters"]
    assert rows[FILES[1][0]]["our_iters"] is None  # explicit: no solve
    text = out.read_text()  # the record names no folder of this machine
    assert str(release["root"]) not in text and "--authors-dir <authors-checkout>" in text


def test_compare_script_reads_the_code_from_a_git_dir(release, tmp_path):
    repo = tmp_path / "repo"
    write_code(repo)
    git = ["git", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "Networks.py", "utils.py"], check=True)
    subprocess.run([*git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "stand-in"], check=True)
    r = run([SCRIPT, "--authors-git-dir", repo / ".git", "--commit", "HEAD", "--weights-dir", release["weights"],
             "--n", 8, "--threads", 1])
    assert r.returncode == 0, r.stderr
    assert "random N(0,1) 8x1x28x28" in r.stdout  # no --data-dir: random inputs
    r = run([SCRIPT, "--authors-git-dir", repo / ".git", "--commit", "no-such-commit", "--weights-dir",
             release["weights"]])
    assert r.returncode != 0 and "no-such-commit" in r.stderr and "Traceback" not in r.stderr


def test_compare_script_fails_on_a_network_that_differs(release, tmp_path):
    """A stand-in whose Jacobian-based class adds its latent residual (not what b35a245 shipped)
    must be told apart from our disconnected variant; the other two still agree."""
    code = write_code(tmp_path / "connected", connected_adjoint=True)
    out = tmp_path / "diffs.json"
    r = run([SCRIPT, "--authors-dir", code, "--weights-dir", release["weights"], "--data-dir",
             release["data_dir"], "--n", 24, "--threads", 1, "--out", out])
    assert r.returncode == 1
    assert "exceeds --max-diff" in r.stderr
    rows = {row["file"]: row for row in json.loads(out.read_text())["files"]}
    assert rows[FILES[2][0]]["max_abs_diff"] > 1e-2
    assert rows[FILES[0][0]]["max_abs_diff"] < 1e-4 and rows[FILES[1][0]]["max_abs_diff"] < 1e-4


# ---------------------------------------------------------------- evaluating the released-file format


def test_evaluate_jfb_file_end_to_end(release, tmp_path):
    name = FILES[0][0]
    out = tmp_path / "r.json"
    r = cli("--authors-weights", release["weights"] / name, "--dataset", "mnist", "--data-dir", release["data_dir"],
            "--batch-size", 32, "--also-train-mode", "--json", out)
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    want = standin_figures(release, name, 32)
    assert got["eval"]["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["eval"]["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert (got["eval"]["iters_mean"], got["eval"]["iters_max"]) == (want["iters_mean"], want["iters_max"])
    assert got["eval"]["batches"] == 3 and got["eval"]["samples"] == N_TEST
    assert want["iters_max"] < 50 and got["eval"]["capped"] == 0  # the stand-in converges
    assert got["recorded_acc"] == 98.0 and got["params"] == 35_856
    assert "train mode (BN batch statistics, dropout on" in r.stdout
    assert got["train_mode"]["loss"] != pytest.approx(got["eval"]["loss"], rel=1e-3)


@pytest.mark.parametrize("index", [1, 2])
def test_evaluate_explicit_and_jacobian_files(release, tmp_path, capsys, index):
    name = FILES[index][0]
    out = tmp_path / "r.json"
    code, stdout, err = main_inprocess(capsys, "--authors-weights", release["weights"] / name, "--dataset", "mnist",
                                       "--data-dir", release["data_dir"], "--batch-size", 40, "--json", out)
    assert code == 0, err
    got, want = json.loads(out.read_text()), standin_figures(release, name, 40)
    assert got["eval"]["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["eval"]["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["eval"]["iters_max"] == want["iters_max"]
    if index == 2:
        assert "latent convolutions disconnected, as in the authors' b35a245 code" in stdout
        assert "latent convolutions disconnected" in got["network"]
    else:
        assert "explicit" in stdout and got["eval"]["capped"] is None


def test_write_table(release, compared, tmp_path):
    assert compared[0].returncode == 0, compared[0].stderr
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, _, _ in FILES:
        (folder / name).write_bytes((release["weights"] / name).read_bytes())
    # an SVHN-format file (our network, their key names): no SVHN data here
    v = A.VARIANTS[("svhn", "jfb")]
    torch.manual_seed(0)
    net = A.build_authors_model(v, channels_last=False)
    save_release_file(folder / "SVHN_FPN_weights_90.00.pth", _Holder(to_authors(v, net.state_dict())),
                      "net_state_dict", [90.0])
    out = tmp_path / "table"
    r = run([TABLE, "--out", out, "--weights-dir", folder, "--data-dir", release["data_dir"], "--logit-diffs",
             compared[1], "--also-train-mode", "--batch-size", 32, "--threads", 1])
    assert r.returncode == 0, r.stderr
    rows = {row["file"]: row for row in csv.DictReader(open(out / "authors_weights.csv"))}
    diffs = {d["file"]: d for d in json.loads(compared[1].read_text())["files"]}
    assert list(rows) == [FILES[0][0], FILES[1][0], FILES[2][0], "SVHN_FPN_weights_90.00.pth"]
    for name, _, _ in FILES:
        want = standin_figures(release, name, 32)
        assert float(rows[name]["eval_acc"]) == pytest.approx(want["accuracy"], abs=1e-9)
        assert float(rows[name]["max_logit_diff"]) == diffs[name]["max_abs_diff"]
        assert rows[name]["status"] == "evaluated" and rows[name]["train_mode_acc"]
    svhn_row = rows["SVHN_FPN_weights_90.00.pth"]
    assert svhn_row["status"] == "missing: no data" and svhn_row["eval_acc"] == ""
    assert svhn_row["parameters"] == "163744"
    readme = (out / "README.md").read_text()
    assert readme.startswith("# The authors' released weights, evaluated here")
    assert "missing: no data" in readme and "not measured" in readme
    assert "python verification/weights_table.py --out <elsewhere>/table --weights-dir <weights-folder>" in readme
    assert "JFB rows:" in readme and "Train mode (BN batch statistics" in readme
    for text in (readme, (out / "authors_weights.csv").read_text()):  # no folder of this machine in the records
        assert str(tmp_path) not in text and str(release["root"]) not in text


class _Holder(torch.nn.Module):
    """A module whose state dict is the given one (to save a file with foreign key names)."""

    def __init__(self, state):
        super().__init__()
        self._state = state
        self.p = torch.nn.Parameter(torch.zeros(1))

    def state_dict(self, *args, **kwargs):
        return dict(self._state)


# ---------------------------------------------------------------- bad released files


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "MNIST_FPN_weights_99.99.pth"
    torch.save({"net_state_dict": _Crafted(str(marker)), "test_acc_hist": [1.0]}, bad)
    r = cli("--authors-weights", bad, "--dataset", "mnist", "--data-dir", tmp_path)
    assert r.returncode == 2
    assert not marker.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "refused to unpickle" in lines[0] and "open" in lines[0]
    assert "--trust-pickle" in lines[0]
    # the same file with --trust-pickle is unpickled in full: the code runs (so the refusal mattered)
    r = cli("--authors-weights", bad, "--dataset", "mnist", "--data-dir", tmp_path, "--trust-pickle")
    assert marker.exists()
    assert r.returncode == 2 and "warning: --trust-pickle" in r.stderr and "Traceback" not in r.stderr


class _Crafted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_files_and_mismatched_dataset(release, tmp_path, capsys):
    jfb_file = release["weights"] / FILES[0][0]

    def expect(path, dataset, *needles):
        code, _, err = main_inprocess(capsys, "--authors-weights", path, "--dataset", dataset, "--data-dir",
                                      release["data_dir"])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert str(path) in lines[0]
        for n in needles:
            assert n in lines[0], lines[0]

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    expect(junk, "mnist", "not a torch checkpoint")
    expect(tmp_path / "absent.pth", "mnist", "no such file")

    other = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    expect(other, "mnist", "expected a dict with net_state_dict or T_state_dict", "model")

    expect(jfb_file, "svhn", "not one for --dataset svhn", "(16, 1, 3, 3)", "allowed: mnist")

    content = A.read_authors_file(str(jfb_file))
    state = dict(content["net_state_dict"])
    state["fc_y.weight"] = torch.zeros(10, 700)
    del state["lat_batch_norm.0.running_mean"]
    wrong = tmp_path / "MNIST_FPN_weights_1.00.pth"
    torch.save({**content, "net_state_dict": state, "lr_scheduler": None}, wrong)
    expect(wrong, "mnist", "does not match b35a245's MNIST_FPN", "R.norms.0.running_mean",
           "torch.Size([10, 700])", "torch.Size([10, 784])")

    renamed = tmp_path / "SVHN_FPN_weights_94.12.pth"
    renamed.write_bytes(jfb_file.read_bytes())
    expect(renamed, "mnist", "named for svhn")

    code, _, err = main_inprocess(capsys, "--authors-weights", jfb_file, "--dataset", "imagenet")
    assert code == 2 and "--dataset='imagenet'" in err and "mnist" in err
    code, _, err = main_inprocess(capsys, "--authors-weights", jfb_file, "--dataset", "mnist", "--data-dir",
                                  tmp_path / "nowhere")
    assert code == 2 and "not found" in err and "--data-dir" in err and "paths.data_dir" not in err
    code, _, err = main_inprocess(capsys, "--authors-weights", jfb_file, "--dataset", "mnist", "--device", "tpu")
    assert code == 2 and "--device='tpu'" in err
    code, _, err = main_inprocess(capsys)
    assert code == 2 and "exactly one of" in err
    code, _, err = main_inprocess(capsys, "--write-table", tmp_path, "--authors-dir", ".")
    assert code == 2 and "unrecognized arguments" in err  # the table is verification/weights_table.py's


def test_a_jacobian_file_with_latent_batch_norm_is_refused(release, tmp_path, capsys):
    """T_state_dict means b35a245's *_Adjoint classes, which have no latent batch norm."""
    content = A.read_authors_file(str(release["weights"] / FILES[0][0]))
    bad = tmp_path / "MNIST_FPN_Jacobian_Based_weights_1.00.pth"
    torch.save({"T_state_dict": content["net_state_dict"], "test_acc_hist": [1.0]}, bad)
    code, _, err = main_inprocess(capsys, "--authors-weights", bad, "--dataset", "mnist")
    assert code == 2 and "MNIST_FPN_Adjoint" in err and "Unexpected key(s)" in err and "R.norms.0.running_mean" in err


def test_standin_randomisation_makes_eval_mode_matter(release):
    """Guards the tests above: with the running statistics used, eval and train mode differ."""
    net = release["nets"][FILES[1][0]]
    x = normalise(torch.as_tensor(release["test"][0][:16]))
    with torch.no_grad():
        a = net.eval()(x)
        b = net.train()(x)
    net.eval()
    assert (a - b).abs().max() > 1e-2
