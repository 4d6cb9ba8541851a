"""The sweeps of `make reproduce-table`: every table and figure run is launched exactly once, with the
overrides the trainer's contract defines."""
from __future__ import annotations

from pathlib import Path

import pytest

from jfb.repro import sweeps
from jfb.repro.reproduce import commands, main, missing_data


def _expanded(datasets=sweeps.DATASETS) -> list[dict[str, str]]:
    return [run for g in sweeps.multiruns(sweeps.all_specs(datasets)) for run in sweeps.expand(g)]


def test_multiruns_cover_every_spec_exactly_once():
    specs = sweeps.all_specs()
    runs = _expanded()
    assert sorted(map(sorted, (r.items() for r in runs))) == sorted(map(sorted, (s.overrides().items() for s in specs)))
    assert len(runs) == len(specs) == len({tuple(sorted(r.items())) for r in runs})


def test_every_table_and_figure_spec_is_launched():
    launched = {tuple(sorted(s.overrides().items())) for s in sweeps.all_specs()}
    needed = []
    for ds in sweeps.DATASETS:
        needed += [*sweeps.table1_specs(ds).values(), *sweeps.table2_specs(ds).values(), *sweeps.table3_specs(ds).values()]
    needed += [c.spec for c in sweeps.fig5_curves() + sweeps.fig6_curves()]
    assert {tuple(sorted(s.overrides().items())) for s in needed} == launched
    # Table 1's and Table 2's JFB run is one run; so is Figure 5's (CIFAR-10, tol 1e-4)
    assert sweeps.table1_specs("cifar10")["jfb"] == sweeps.table2_specs("cifar10")["jfb"] == sweeps.fig5_curves()[0].spec
    assert sweeps.fig6_curves()[0].spec == sweeps.table1_specs("mnist")["jfb"]
    # 3 datasets x (jfb, explicit, ift, jfb without BN, unrolled) + 4 Neumann truncations
    assert len(launched) == 19


def test_specs_follow_the_paper():
    ift = sweeps.table2_specs("mnist")["ift"]
    assert (ift.method, ift.label, ift.latent_bn) == ("ift", "ift-cg", False)  # no latent BN, as the paper
    assert sweeps.table1_specs("mnist")["jfb"].latent_bn is True
    assert {s.latent_bn for s in sweeps.table3_specs("svhn").values()} == {False}  # the same network for all three
    assert all(s.tol == 1e-4 for s in sweeps.all_specs(("cifar10",)))
    assert [c.spec.label for c in sweeps.fig6_curves()] == ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "neumann-k10"]


def test_spec_matches_records():
    spec = sweeps.table2_specs("cifar10")["ift"]
    rec = {"dataset": "cifar10", "method_label": "ift-cg", "latent_bn": False, "tol": 0.0001}
    assert spec.matches(rec)
    assert not spec.matches({**rec, "tol": 0.1})
    assert not spec.matches({**rec, "latent_bn": True})
    assert not spec.matches({**rec, "method_label": "ift-fixed_point"})


def test_commands(tmp_path: Path):
    prof = sweeps.get_profile("smoke")
    cmds = commands(prof, (0, 1, 2), tmp_path / "runs", tmp_path / "data", sweeps.DATASETS, "joblib",
                    ["trainer.epochs=1", "device=cpu"])
    assert len(cmds) == 5
    first = cmds[0]
    assert first[1:4] == ["-m", "jfb.train", "-m"]
    assert "seed=0,1,2" in first and "skip_completed=true" in first and "profile=smoke" in first
    assert f"paths.output_root={tmp_path / 'runs'}" in first
    assert "++logger.group=reproduce-smoke" in first and "hydra/launcher=joblib" in first
    # an extra override replaces the profile's own value of the same key, never duplicates it
    assert "trainer.epochs=1" in first and "trainer.epochs=2" not in first and "device=cpu" in first
    assert "experiment=paper/mnist,paper/svhn" in first and "method=explicit,jfb" in first
    with pytest.raises(SystemExit, match="set by the sweep"):
        commands(prof, (0,), tmp_path, tmp_path, sweeps.DATASETS, None, ["method=jfb"])


def test_missing_data_detects_files(tmp_path: Path):
    assert missing_data(sweeps.DATASETS, tmp_path) == {"mnist": "no data", "svhn": "no data", "cifar10": "no data"}
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"")
    assert missing_data(sweeps.DATASETS, tmp_path) == {"svhn": "no data", "cifar10": "no data"}


def test_quick_profile_without_data_launches_nothing_and_shows_gaps(tmp_path: Path):
    """No dataset files at all: no run starts, and every cell of ours reads "missing: no data"."""
    rc = main(["--profile", "quick", "--data-dir", str(tmp_path / "nodata"), "--results-root", str(tmp_path / "res"),
               "--no-figures"])
    assert rc == 0
    text = (tmp_path / "res" / "quick" / "table2.md").read_text()
    assert "| MNIST | JFB | 17.6 | 0 | 99.4 | missing: no data | missing: no data | missing: no data |" in text
    assert not (tmp_path / "res" / "quick" / "runs").exists()


def test_dry_run_prints_commands(tmp_path: Path, capsys):
    assert main(["--profile", "paper", "--seeds", "0 1", "--data-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 runs in 0 multiruns" in out and "missing: no data" in out
