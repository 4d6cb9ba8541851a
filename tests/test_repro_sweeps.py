"""The sweeps of `make reproduce-table`: every table and figure run is launched exactly once, with the
overrides the trainer's contract defines; labels come from the configs; data, plan and time estimate."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from jfb.repro import config, sweeps
from jfb.repro.estimate import Bench, batches, pick_bench, run_seconds
from jfb.repro.plan import plan_runs
from jfb.repro.reproduce import NO_DATA_EXIT, check_data, commands, main, missing_data, run_overrides

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "results" / "bench"


def _expanded(datasets=sweeps.DATASETS) -> list[dict[str, str]]:
    return [run for g in sweeps.multiruns(sweeps.all_specs(datasets)) for run in sweeps.expand(g)]


@pytest.mark.parametrize("profile", sorted(sweeps.PROFILES))
def test_multiruns_cover_every_spec_exactly_once(profile: str):
    specs = sweeps.get_profile(profile).specs()
    runs = [run for g in sweeps.multiruns(specs) for run in sweeps.expand(g)]
    assert sorted(map(sorted, (r.items() for r in runs))) == sorted(map(sorted, (s.overrides().items() for s in specs)))
    assert len(runs) == len(specs) == len({tuple(sorted(r.items())) for r in runs})


def test_every_profile_has_its_diagnostics_runs():
    """Each profile adds one MNIST run per method with its diagnostics.every (the paper's Jacobian-based
    method at the preset tolerance among them), after the runs of the tables and figures."""
    every = {name: p.diagnostics_every for name, p in sweeps.PROFILES.items()}
    assert every == {"paper": 100, "quick": 25, "smoke": 2}
    for name, n in every.items():
        specs = sweeps.get_profile(name).specs()
        assert specs[:20] == sweeps.all_specs() and len(specs) == 26
        diag = specs[20:]
        assert [s.label for s in diag] == ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "unrolled", "ift-cg"]
        assert {(s.dataset, s.diagnostics, s.tol) for s in diag} == {("mnist", n, None)}
        assert [s.latent_bn for s in diag] == [True, True, True, True, False, False]
        for s in diag:
            assert s.overrides()["diagnostics.every"] == str(n)
            cfg = config.resolved([*s.override_args(), f"profile={name}"])
            assert cfg["diagnostics"]["every"] == n and cfg["solver"]["tol"] == config.preset("mnist")["solver"]["tol"]
    assert sweeps.get_profile("quick").specs(("svhn",)) == sweeps.all_specs(("svhn",))  # MNIST's alone
    # the quick profile's checks: 4 x 200 steps, one every 25th -> 32 checks per run
    quick = sweeps.get_profile("quick")
    steps = int(quick.overrides["trainer.epochs"]) * int(quick.overrides["trainer.max_batches"])
    assert len(range(0, steps, quick.diagnostics_every)) == 32
    with pytest.raises(ValueError):
        sweeps.diagnostics_curves(0)


def test_every_table_and_figure_spec_is_launched():
    launched = {tuple(sorted(s.overrides().items())) for s in sweeps.all_specs()}
    needed = []
    for ds in sweeps.DATASETS:
        needed += [*sweeps.table1_specs(ds).values(), *sweeps.table2_specs(ds).values(), *sweeps.table3_specs(ds).values()]
        needed += [c.spec for c in sweeps.fig5_curves(ds)]
    needed += [c.spec for c in sweeps.fig6_curves()]
    needed += list(sweeps.cg_bn_specs().values())
    assert {tuple(sorted(s.overrides().items())) for s in needed} == launched
    # Table 1's and Table 2's JFB run is one run; so is Figure 5's (CIFAR-10, tol 1e-4)
    assert sweeps.table1_specs("cifar10")["jfb"] == sweeps.table2_specs("cifar10")["jfb"] == sweeps.fig5_curves("cifar10")[0].spec
    assert [c.spec for c in sweeps.fig5_curves("mnist")] == list(sweeps.table2_specs("mnist").values())[::-1]
    assert sweeps.fig6_curves()[0].spec == sweeps.table1_specs("mnist")["jfb"]
    # 3 datasets x (jfb, explicit, ift, jfb without BN, unrolled) + 4 Neumann truncations + IFT with latent BN
    assert len(launched) == 20


def test_specs_follow_the_paper():
    ift = sweeps.table2_specs("mnist")["ift"]
    assert (ift.method, ift.label, ift.latent_bn) == ("ift", "ift-cg", False)  # no latent BN, as the paper
    assert sweeps.table1_specs("mnist")["jfb"].latent_bn is True
    assert {s.latent_bn for s in sweeps.table3_specs("svhn").values()} == {False}  # the same network for all three
    assert all(s.tol == 1e-4 for s in sweeps.all_specs(("cifar10",)))
    assert [c.spec.label for c in sweeps.fig6_curves()] == ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "neumann-k10"]


def test_labels_come_from_the_composed_config():
    """The label a spec expects is the method config's own (method/ift.yaml: ift-${method.options.backward}),
    so another backward solver or a renamed label changes it with the config, never apart from it."""
    fp = sweeps.RunSpec("mnist", "ift", False, (("backward", "fixed_point"),))
    assert fp.label == "ift-fixed_point"
    assert sweeps.neumann("mnist", 7).label == "neumann-k7"
    for spec in sweeps.all_specs():
        assert spec.label == config.resolved(spec.override_args())["method"]["label"]
    assert "label=" not in (REPO / "src" / "jfb" / "repro" / "sweeps.py").read_text().replace("label: str", "")


def test_spec_matches_records():
    from jfb.training.summary import RunSummary

    spec = sweeps.table2_specs("cifar10")["ift"]
    rec = RunSummary(dataset="cifar10", method_label="ift-cg", latent_bn=False, tol=0.0001)
    assert spec.matches(rec)
    assert not spec.matches(dataclasses.replace(rec, tol=0.1))
    assert not spec.matches(dataclasses.replace(rec, latent_bn=True))
    assert not spec.matches(dataclasses.replace(rec, method_label="ift-fixed_point"))
    # the diagnostics setting: a run with checks is never the timed run, nor the other way round
    assert not spec.matches(rec, diagnostics_every=25)
    checked = dataclasses.replace(spec, diagnostics=25)
    assert checked.matches(rec, 25) and not checked.matches(rec) and not checked.matches(rec, 10)


def test_diagnostics_runs_get_folders_of_their_own(tmp_path: Path):
    """The diagnostics setting is part of the run's identity: the same method and seed with checks
    lands in another folder (another hash), so the timed run is never resumed or skipped as it."""
    prof = sweeps.get_profile("quick")
    overrides = run_overrides(prof, tmp_path / "runs", tmp_path / "data", [])
    timed, checked = plan_runs([sweeps.jfb("mnist"), sweeps.diagnostics_curves(25)[0].spec], (0,), overrides,
                               tmp_path / "runs")
    assert timed.folder != checked.folder and timed.name.split("_")[:3] == checked.name.split("_")[:3]
    assert timed.cfg["diagnostics"]["every"] is None and checked.cfg["diagnostics"]["every"] == 25


def test_commands(tmp_path: Path):
    prof = sweeps.get_profile("smoke")
    cmds = commands(prof, (0, 1, 2), tmp_path / "runs", tmp_path / "data", sweeps.DATASETS, "joblib",
                    ["trainer.epochs=1", "device=cpu"])
    assert len(cmds) == 9  # 6 multiruns of the tables and figures, 3 of the diagnostics runs (MNIST)
    assert [any(a.startswith("diagnostics.every=") for a in c) for c in cmds] == [False] * 6 + [True] * 3
    assert "diagnostics.every=2" in cmds[6] and "method=unrolled,ift" in cmds[8]
    first = cmds[0]
    assert first[1:4] == ["-m", "jfb.train", "-m"]
    assert "seed=0,1,2" in first and "profile=smoke" in first
    assert not any(a.startswith("skip_completed") or a.startswith("paths.output_dir") for a in first)
    assert f"paths.output_root={tmp_path / 'runs'}" in first
    assert "++logger.group=reproduce-smoke" in first and "hydra/launcher=joblib" in first
    # an extra override replaces the profile's own value of the same key, never duplicates it
    assert "trainer.epochs=1" in first and "trainer.epochs=2" not in first and "device=cpu" in first
    assert "experiment=paper/mnist,paper/svhn" in first and "method=explicit,jfb" in first
    with pytest.raises(SystemExit, match="set by the sweep"):
        commands(prof, (0,), tmp_path, tmp_path, sweeps.DATASETS, None, ["method=jfb"])
    with pytest.raises(SystemExit, match="set by the sweep"):  # diagnostics on every run would time the checks
        commands(prof, (0,), tmp_path, tmp_path, sweeps.DATASETS, None, ["diagnostics.every=5"])


def test_missing_data_detects_files(tmp_path: Path):
    from fakedata import write_mnist

    assert missing_data(sweeps.DATASETS, tmp_path) == {"mnist": "no data", "svhn": "no data", "cifar10": "no data"}
    write_mnist(tmp_path, n_train=20, n_test=10)
    assert missing_data(sweeps.DATASETS, tmp_path) == {"svhn": "no data", "cifar10": "no data"}


def test_no_data_exits_non_zero_with_one_line_per_dataset(tmp_path: Path, capsys):
    """No dataset files at all: nothing is launched, no table is built, and the exit status says so."""
    nodata = tmp_path / "nodata"
    rc = main(["--profile", "quick", "--data-dir", str(nodata), "--results-root", str(tmp_path / "res"),
               "--no-download", "--no-figures"])
    assert rc == NO_DATA_EXIT != 0
    lines = capsys.readouterr().out.splitlines()
    for title in ("MNIST", "SVHN", "CIFAR-10"):
        mine = [line for line in lines if line.startswith(f"[reproduce] {title}: ")]
        assert len(mine) == 1 and f"no data in {nodata}" in mine[0] and "DATA_DIR" in mine[0]
    assert lines[-1].startswith("[reproduce] no dataset of profile quick has data in") and len(lines) == 4
    assert not (tmp_path / "res").exists()


def test_mnist_download_failure_is_one_line(tmp_path: Path, monkeypatch, capsys):
    import jfb.repro.reproduce as reproduce

    monkeypatch.setattr(reproduce, "download", lambda ds, d: "URLError: <urlopen error [Errno -3] name resolution>")
    skipped = check_data(sweeps.get_profile("quick"), tmp_path, allow_download=True, dry_run=False)
    assert set(skipped) == set(sweeps.DATASETS)
    out = capsys.readouterr().out
    mnist = [line for line in out.splitlines() if line.startswith("[reproduce] MNIST: no data")]
    assert len(mnist) == 1 and "download failed (URLError" in mnist[0] and "DATA_DIR" in mnist[0]


def test_mnist_downloaded_when_missing(tmp_path: Path, monkeypatch):
    from fakedata import write_mnist

    import jfb.repro.reproduce as reproduce

    calls = []

    def fake_download(ds, data_dir):
        calls.append(ds)
        write_mnist(data_dir, n_train=20, n_test=10)
        return None

    monkeypatch.setattr(reproduce, "download", fake_download)
    skipped = check_data(sweeps.get_profile("quick"), tmp_path, allow_download=True, dry_run=False)
    assert calls == ["mnist"] and set(skipped) == {"svhn", "cifar10"}  # SVHN and CIFAR-10: `make data` only
    assert check_data(sweeps.get_profile("quick"), tmp_path / "none", allow_download=True, dry_run=True) \
        == {ds: "no data" for ds in sweeps.DATASETS} and calls == ["mnist"]  # a dry run downloads nothing


def test_dry_run_prints_commands_and_an_estimate_naming_its_source(tmp_path: Path, capsys):
    from fakedata import write_mnist

    write_mnist(tmp_path / "data", n_train=20, n_test=10)
    assert main(["--profile", "quick", "--data-dir", str(tmp_path / "data"), "--results-root", str(tmp_path / "res"),
                 "--bench-dir", str(BENCH), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 runs in 7 multiruns" in out and out.count("-m jfb.train -m") == 7  # 10 timed, 6 with diagnostics
    assert out.count("diagnostics.every=25") == 3
    assert "estimate caveat: gradient diagnostics: about 20 JFB training steps per check, not benchmarked" in out
    estimate = next(line for line in out.splitlines() if "time estimate" in line)
    assert "This is an estimate from the benchmark" in estimate and str(BENCH) in estimate
    assert not (tmp_path / "res").exists()  # a dry run writes nothing


def test_dry_run_without_bench_says_so(tmp_path: Path, capsys):
    assert main(["--profile", "smoke", "--results-root", str(tmp_path / "res"), "--bench-dir", str(tmp_path),
                 "--dry-run"]) == 0
    assert "time estimate: none (no benchmark of a" in capsys.readouterr().out


def _bench(device: str = "cpu", name: str = "Test CPU") -> Bench:
    row = lambda net, method, step, fwd: {"net": net, "method": method, "depth": 0 if method == "explicit" else 10,
                                         "step_ms": {"median": step}, "fwd_ms": {"median": fwd}}
    data = {"hardware": {"device": device, "device_name": name, "date": "2026-01-01T00:00:00"},
            "depth": {"rows": [row("mnist", "jfb", 10.0, 8.0), row("mnist", "neumann-5", 20.0, 8.0),
                               row("svhn", "jfb", 30.0, 16.0), row("svhn", "ift-cg", 60.0, 16.0)]},
            "paper_step": {"settings": {"batch": 100},
                           "variants": {"jfb": {"step_with_data_mean_ms": 100.0, "forward_ms": {"median": 50.0}},
                                        "ift-cg": {"step_with_data_mean_ms": 200.0, "forward_ms": {"median": 50.0}}}},
            "epoch": {"process_wall_s": 12.0, "epoch_with_eval_s": 10.0}}
    return Bench(Path(f"{device}.json"), data)


def test_estimate_arithmetic():
    b = _bench()
    cfg = {"dataset": {"name": "svhn", "source": "torchvision"}, "method": {"label": "ift-cg"},
           "trainer": {"batch_size": 100, "test_batch_size": 400, "max_batches": 200}}
    assert batches(cfg) == (200, 66)  # 73,257 / 100 capped at 200; 26,032 / 400 rounded up
    # step: MNIST JFB 100 ms x (svhn ift-cg 60 / mnist jfb 10) = 600 ms; eval: 50 ms x 16/8 x 400/100 = 400 ms
    seconds, note = run_seconds(b, cfg, epochs=3)
    assert seconds == pytest.approx(2.0 + 3 * (200 * 0.6 + 66 * 0.4)) and note is None
    mnist_k2 = {**cfg, "dataset": {"name": "mnist", "source": "synthetic", "synthetic_size": [16, 8]},
                "method": {"label": "neumann-k2"}, "trainer": {"batch_size": 2, "test_batch_size": 4, "max_batches": 2}}
    # k = 2 lies 2/5 of the way from JFB (10 ms) to k = 5 (20 ms): 14 ms relative 1.4; batch 2 of 100
    assert run_seconds(b, mnist_k2, epochs=1)[0] == pytest.approx(2.0 + 2 * 100 * 1.4 * 0.02 / 1000 + 2 * 50 * 0.04 / 1000)
    assert run_seconds(b, cfg, epochs=0) == (0.0, None)
    # diagnostics every 25 steps: 3 x 200 / 25 = 24 checks of 20 SVHN JFB steps (100 ms x 30/10 = 300 ms)
    checked, note = run_seconds(b, {**cfg, "diagnostics": {"every": 25}}, epochs=3)
    assert checked == pytest.approx(seconds + 24 * 20 * 0.3) and "per check, not benchmarked" in note
    unknown = {**cfg, "method": {"label": "unrolled"}}
    assert run_seconds(b, unknown, epochs=1)[1] == "no benchmark row for svhn unrolled: JFB's cost used"
    assert pick_bench([_bench("cuda", "GPU"), b], "cpu", "Other CPU") is b
    assert pick_bench([b], "cuda", "GPU") is None


def test_plan_skips_completed_runs_and_extends_shorter_ones(tmp_path: Path):
    """The plan reads each run's folder as the trainer will: the folder name comes from the composed
    config, a completed run of the asked epochs is skipped, a shorter one extended."""
    prof = sweeps.get_profile("smoke")
    runs_dir = tmp_path / "runs"
    specs = sweeps.all_specs(("mnist",))[:2]
    overrides = run_overrides(prof, runs_dir, tmp_path / "data", [])
    planned = plan_runs(specs, (0,), overrides, runs_dir)
    assert [p.action for p in planned] == ["new", "new"]
    assert planned[0].name.startswith(f"paper-mnist_{specs[0].label}_s0_")
    for p, (status, done) in zip(planned, [("completed", 2), ("completed", 1)]):
        p.folder.mkdir(parents=True)
        (p.folder / "summary.json").write_text(json.dumps({"status": status, "epochs_completed": done}))
    again = plan_runs(specs, (0,), overrides, runs_dir)
    assert [(p.action, p.epochs_left) for p in again] == [("skip", 0), ("extend", 1)]
    shutil.rmtree(runs_dir)
