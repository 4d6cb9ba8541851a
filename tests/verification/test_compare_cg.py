"""verification/compare_cg.py end to end, against a stand-in for the authors' code, and the key mapping of
their latest networks (verification/common.py: paper_module_map).

The stand-in (tests/verification/authors_standin_head.py) has the authors' interfaces and none of their code: an
MNIST network class, their loop's signature and log line, and a plain batched CG with the
``cg_batch`` signature. The script must find the stand-in's Jacobian-based step equal to ours
(same algorithm), and must report a difference when the stand-in's CG starts at zero instead of
the right-hand side.
"""
from __future__ import annotations

import json
import sys

import pytest

from authors_standin_head import write_code


@pytest.fixture(scope="module")
def script():
    import compare_cg

    return compare_cg


def run(script, tmp_path, cg_start, capsys):
    code = write_code(tmp_path / f"authors_{cg_start}", cg_start=cg_start)
    out = tmp_path / f"cmp_{cg_start}"
    before = {m: sys.modules.get(m) for m in ("BatchCG", "Networks", "utils")}
    rc = script.main(["--authors-dir", str(code), "--datasets", "mnist", "--batch", "6", "--seed", "3",
                      "--history-iters", "4", "--out", str(out)])
    assert {m: sys.modules.get(m) for m in before} == before  # the stand-in's modules are not left behind
    printed = capsys.readouterr()
    return rc, json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text(), printed


def test_reports_equality_for_the_same_algorithm(script, tmp_path, capsys):
    rc, res, md, printed = run(script, tmp_path, "rhs", capsys)
    assert rc == 0, printed.out + printed.err
    (row,) = res["datasets"]
    assert row["equal"] and row["differences"] == []
    assert res["dtype"] == "float64"
    assert row["tol"] == 0.1 and row["max_iter"] == 50  # the MNIST preset's tolerance and cap
    assert row["our_options"]["cg_scope"] == "sample" and row["our_options"]["cg_start"] == "rhs"
    assert row["forward"]["theirs"] == row["forward"]["ours"] >= 1
    assert row["cg"]["theirs"] == row["cg"]["ours"] >= 1
    assert row["cg"]["theirs_optimal"] is True and row["cg"]["ours_converged"] is True
    assert row["cg"]["solution"]["rel"] < 1e-9 and row["forward"]["fixed_point"]["rel"] < 1e-9
    up = row["update"]
    assert up["theirs_applied"] and up["worst_parameter"]["rel"] < 1e-9
    params = up["parameters"]
    assert len(params) == 19 and params["latent_convs.1.3.weight"]["ours"] == "R.blocks.1.conv2.weight"
    assert params["fc_y.weight"]["max_abs_theirs"] > 0  # S got its gradient (their separate S pass)
    # the biases in front of training-mode batch norm have zero gradient, judged against the whole update
    assert set(up["zero_in_both"]) == {"conv_d1.bias", "conv_d2.bias"}
    assert row["dropout_modules_zeroed"] == {"theirs": 1, "ours": 1}
    assert row["lipschitz_rescale"]["applied_once_by_their_code"]
    # their own log line and counters
    assert row["their_log_line"]["n_Umatvecs"] == row["cg"]["theirs"] * 6 == row["cg"]["their_logged_n_Umatvecs"]
    assert row["cg"]["their_A_bmm_calls"] == 1 + 2 * row["cg"]["theirs"]  # the stand-in's CG: 2 per iteration
    assert len(row["cg"]["history_max_residual"]) == 4
    assert "| mnist |" in md and "| yes |" in md and "## CIFAR-10 at 1e-4" in md
    assert res["table2_implied"]["cifar10"]["niter_per_batch_if_whole_run"] == pytest.approx(19.4)
    assert "EQUAL" in printed.out
    # the report names no folder of this machine
    assert str(tmp_path) not in md + json.dumps(res) and "from <authors-checkout>" in md
    assert "--authors-dir <authors-checkout>" in res["command"]
    # --render re-writes the Markdown from the JSON alone
    md_path = tmp_path / "cmp_rhs.md"
    md_path.unlink()
    assert script.main(["--render", str(tmp_path / "cmp_rhs.json")]) == 0
    assert md_path.read_text() == md


def test_detects_a_cg_that_starts_at_zero(script, tmp_path, capsys):
    rc, res, md, printed = run(script, tmp_path, "zero", capsys)
    assert rc == 1
    (row,) = res["datasets"]
    assert not row["equal"]
    assert any(d.startswith(("CG iterations", "CG solution")) for d in row["differences"]), row["differences"]
    assert row["cg"]["solution"]["rel"] > 1e-6
    assert "| NO |" in md and "differ on mnist" in printed.err


def test_mapping_of_their_latest_networks():
    from common import paper_module_map, paper_to_authors, paper_to_ours

    from jfb.models import build_model

    net = build_model("cifar10", latent_bn=False, channels_last=False)
    theirs = paper_to_authors("cifar10", net.state_dict())
    assert not any(k.startswith(("Q.", "R.", "S.")) for k in theirs)
    # 2 x 16 data blocks, an AvgPool after each 16 in ours: their data_convs[16] is our Q.blocks[17]
    assert paper_module_map("cifar10")["data_convs.16.0"] == "Q.blocks.17.conv1"
    assert paper_module_map("cifar10")["dat_batch_norm.31"] == "Q.blocks.32.norm"
    n_q = sum(v.numel() for k, v in theirs.items() if k.startswith(("data_conv", "data_convs")))
    assert n_q == 713_020  # the authors' code
    assert theirs["label_fc.weight"].shape == (10, 875)
    assert set(paper_to_ours("cifar10", theirs, latent_bn=False)) == set(net.state_dict())
    # their classes keep lat_batch_norm buffers with architecture='Jacobian': dropped without latent BN
    theirs["lat_batch_norm.0.running_mean"] = theirs["label_fc.weight"].new_zeros(35)
    assert "R.norms.0.running_mean" not in paper_to_ours("cifar10", theirs, latent_bn=False)
    assert "R.norms.0.running_mean" in paper_to_ours("cifar10", theirs, latent_bn=True)
    mnist = build_model("mnist", latent_bn=True, channels_last=False).state_dict()
    assert set(paper_to_ours("mnist", paper_to_authors("mnist", mnist))) == set(mnist)
