"""The sweeps of `make reproduce-table`: every table and figure run is launched exactly once, with the overrides the
trainer's contract defines and the seed rule of its table (Tables 1-2 and their figures every seed, the other runs
the first); labels come from the configs; data, the dry run's plan and its time estimate from reference records."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jfb.repro import config, sweeps
from jfb.repro.records import Record
from jfb.repro.reproduce import NO_DATA_EXIT, check_data, commands, estimate, main, plan_runs, run_overrides
from jfb.training.records import RunSummary

REPO = Path(__file__).resolve().parents[1]
DIAG_LABELS = ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "unrolled", "ift-cg", "ift-exact"]


@pytest.mark.parametrize("profile", sorted(sweeps.PROFILES))
def test_multiruns_cover_every_spec_exactly_once(profile: str):
    specs = sweeps.get_profile(profile).specs()
    groups = sweeps.multiruns(specs)
    runs = [(run, every_seed) for g, every_seed in groups for run in sweeps.expand(g)]
    assert sorted(sorted(r.items()) for r, _ in runs) == sorted(sorted(s.overrides().items()) for s in specs)
    assert len(runs) == len(specs) == len({tuple(sorted(r.items())) for r, _ in runs})
    # each run keeps its spec's seed rule: a group is launched with every seed only if its specs need them
    rule = {tuple(sorted(s.overrides().items())): s.all_seeds for s in specs}
    assert all(rule[tuple(sorted(r.items()))] == every_seed for r, every_seed in runs)


def test_every_profile_has_its_diagnostics_runs():
    """Each profile adds one MNIST run per method with its diagnostics.every (the paper's Jacobian-based method at
    the preset tolerance and the exact implicit gradient among them), after the runs of the tables and figures."""
    every = {name: p.diagnostics_every for name, p in sweeps.PROFILES.items()}
    assert every == {"paper": 100, "quick": 50, "smoke": 2}
    for name, n in every.items():
        specs = sweeps.get_profile(name).specs()
        assert specs[:23] == sweeps.all_specs() and len(specs) == 34
        diag = specs[23:30]
        assert [s.label for s in diag] == DIAG_LABELS
        assert {(s.dataset, s.diagnostics, s.tol, s.all_seeds) for s in diag} == {("mnist", n, None, False)}
        assert [s.latent_bn for s in diag] == [True, True, True, True, False, False, False]
        for s in diag:
            assert s.overrides()["diagnostics.every"] == str(n)
            cfg = config.resolved([*s.override_args(), f"profile={name}"])
            assert cfg["diagnostics"]["every"] == n and cfg["solver"]["tol"] == config.preset("mnist")["solver"]["tol"]
        # beyond the paper: the methods table's runs (JFB and Neumann k = 1, 2 share the diagnostics runs above)
        assert [s.label for s in specs[30:]] == ["phantom-k5", "jfb-stochastic", "ift-exact", "jfb-jacreg"]
        assert [s.latent_bn for s in specs[30:]] == [True] * 4 and {s.diagnostics for s in specs[30:]} == {n}
        assert [c.spec for c in sweeps.methods_curves(n)][1:3] == diag[1:3]
    assert sweeps.get_profile("quick").specs(("svhn",)) == sweeps.all_specs(("svhn",))  # MNIST's alone
    # the quick profile's checks: 4 x 200 steps, one every 50th -> 16 checks per run; one thread per run, two at once
    quick = sweeps.get_profile("quick")
    steps = int(quick.overrides["trainer.epochs"]) * int(quick.overrides["trainer.max_batches"])
    assert len(range(0, steps, quick.diagnostics_every)) == 16
    assert quick.overrides["threads"] == "1" and quick.jobs == 2
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
    # 3 datasets x (explicit, jfb, ift, jfb without BN, exact, unrolled) + 4 Neumann truncations + IFT with latent BN
    assert len(launched) == len(sweeps.all_specs()) == 23


def test_seed_rule_every_seed_for_tables_1_and_2_only():
    """Tables 1-2 and their figure specs run every seed; the others (Table 3, Figure 6's truncations, the CG table)
    the first only; a spec both need (Table 2's Jacobian-based run, also Table 3's) runs every seed, once."""
    specs = sweeps.all_specs()
    every = {s for s in specs if s.all_seeds}
    for ds in sweeps.DATASETS:
        assert set(sweeps.table1_specs(ds).values()) | set(sweeps.table2_specs(ds).values()) <= every
        assert {dataclasses.replace(s, all_seeds=True) for s in sweeps.table3_specs(ds).values()} & every == \
            {sweeps.ift(ds, all_seeds=True)}
    assert sum(s == sweeps.ift("mnist", all_seeds=True) for s in specs) == 1
    assert sweeps.ift("mnist") not in specs  # never a second, single-seed copy
    assert len(every) == 9  # 3 datasets x (explicit, jfb, ift)
    assert not any(c.spec.all_seeds for c in sweeps.fig6_curves()[1:]) and sweeps.fig6_curves()[0].spec.all_seeds


def test_specs_follow_the_paper():
    ift = sweeps.table2_specs("mnist")["ift"]
    assert (ift.method, ift.label, ift.latent_bn) == ("ift", "ift-cg", False)  # no latent BN, as the paper
    assert sweeps.table1_specs("mnist")["jfb"].latent_bn is True
    assert {s.latent_bn for s in sweeps.table3_specs("svhn").values()} == {False}  # one network for all four
    assert list(sweeps.table3_specs("mnist")) == ["jfb", "ift", "ift_exact", "unrolled"]
    exact = sweeps.table3_specs("mnist")["ift_exact"]
    assert (exact.method, exact.label, exact.latent_bn) == ("ift", "ift-exact", False)
    opts = config.resolved(exact.override_args())["method"]["options"]
    assert (opts["cg_scope"], opts["cg_start"], opts["backward_tol"], opts["backward_stop"]) == (
        "batch", "g", 1e-6, "rel")
    paper = config.resolved(ift.override_args())["method"]["options"]  # the authors' CG: per sample, from b = J g
    assert (paper["cg_scope"], paper["cg_start"]) == ("sample", "rhs")
    bn = sweeps.cg_bn_specs()["bn"]
    assert bn.latent_bn and config.resolved(bn.override_args())["method"]["options"]["cg_scope"] == "batch"
    assert all(s.tol == 1e-4 for s in sweeps.all_specs(("cifar10",)))
    assert [c.spec.label for c in sweeps.fig6_curves()] == ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "neumann-k10"]


def test_labels_come_from_the_composed_config():
    """The label a spec expects is the composed config's own (method/ift.yaml: ift-${method.options.backward}), so
    another backward solver or a renamed label changes it with the config, never apart from it."""
    fp = sweeps.RunSpec("mnist", "ift", False, (("backward", "fixed_point"),))
    assert fp.label == "ift-fixed_point"
    assert sweeps.neumann("mnist", 7).label == "neumann-k7"
    for spec in sweeps.get_profile("paper").specs():
        assert spec.label == config.resolved(spec.override_args())["method"]["label"]
    # no label is typed in the sweep as what a record must say (the exact gradient's is an override the run records)
    assert "label=" not in (REPO / "src" / "jfb" / "repro" / "sweeps.py").read_text().replace("label: str", "")


def _record(settings: dict | None = None, **summary) -> Record:
    return Record(Path("run"), RunSummary(**summary), settings=settings or {})


def test_spec_matches_records():
    spec = sweeps.table2_specs("cifar10")["ift"]
    rec = dict(dataset="cifar10", method_label="ift-cg", latent_bn=False, tol=0.0001)
    assert spec.matches(_record(**rec))
    assert not spec.matches(_record(**{**rec, "tol": 0.1}))
    assert not spec.matches(_record(**{**rec, "latent_bn": True}))
    assert not spec.matches(_record(**{**rec, "latent_bn": None}))
    assert not spec.matches(_record(**{**rec, "method_label": "ift-fixed_point"}))
    assert not spec.matches(_record(**{**rec, "method_label": "ift-exact"}))  # the exact gradient is its own row
    # the diagnostics setting (the record's own settings): a run with checks is never the timed run, nor the
    # other way round
    checked_rec = _record({"diagnostics": {"every": 25}}, **rec)
    assert not spec.matches(checked_rec)
    checked = dataclasses.replace(spec, diagnostics=25)
    assert checked.matches(checked_rec) and not checked.matches(_record(**rec))
    assert not checked.matches(_record({"diagnostics": {"every": 10}}, **rec))


def test_diagnostics_runs_get_folders_of_their_own(tmp_path: Path):
    """The diagnostics setting is part of the run's identity: the same method and seed with checks lands in another
    folder (another hash), so the timed run is never resumed or skipped as it."""
    prof = sweeps.get_profile("quick")
    overrides = run_overrides(prof, tmp_path / "runs", tmp_path / "data", [])
    planned = {spec: folder for spec, _, folder, _ in plan_runs(prof, (0,), overrides, tmp_path / "runs", ("mnist",))}
    timed, checked = planned[sweeps.jfb("mnist", all_seeds=True)], planned[sweeps.diagnostics_curves(50)[0].spec]
    assert timed != checked and timed.name.split("_")[:3] == checked.name.split("_")[:3]
    assert len(set(planned.values())) == len(planned) == 22  # 11 timed MNIST runs, 11 with diagnostics
    for spec, every in ((sweeps.jfb("mnist"), None), (sweeps.diagnostics_curves(50)[0].spec, 50)):
        assert config.resolved([*spec.override_args(), *overrides])["diagnostics"]["every"] == every


def test_commands(tmp_path: Path):
    prof = sweeps.get_profile("smoke")
    cmds = commands(prof, (0, 1, 2), tmp_path / "runs", tmp_path / "data", sweeps.DATASETS, "joblib",
                    ["trainer.epochs=1", "device=cpu"])
    assert len(cmds) == 17  # 10 multiruns of the tables and figures, 7 of the diagnostics runs (MNIST)
    assert [any(a.startswith("diagnostics.every=") for a in c) for c in cmds] == [False] * 10 + [True] * 7
    assert "diagnostics.every=2" in cmds[10] and "method=unrolled,ift" in cmds[12]
    assert "method.label=ift-exact" in cmds[13] and "model.latent_bn=false,true" in cmds[13]
    assert [next(a for a in c if a.startswith("method.label=")) for c in cmds[14:]] == [
        "method.label=phantom-k5", "method.label=jfb-stochastic", "method.label=jfb-jacreg"]
    first = cmds[0]
    assert first[1:4] == ["-m", "jfb.train", "-m"]
    assert "seed=0,1,2" in first and "profile=smoke" in first
    # the seed rule: Tables 1-2's multiruns every seed, the others the first
    assert [next(a for a in c if a.startswith("seed=")) for c in cmds].count("seed=0,1,2") == 4
    assert all("seed=0" in c for c in cmds if "seed=0,1,2" not in c)
    assert not any(a.startswith("skip_completed") or a.startswith("paths.output_dir") for a in first)
    assert f"paths.output_root={tmp_path / 'runs'}" in first and "hydra/launcher=joblib" in first
    assert not any("logger.group" in a for a in first)  # smoke logs no run to W&B (logger=none)
    # an extra override replaces the profile's own value of the same key, never duplicates it
    assert "trainer.epochs=1" in first and "trainer.epochs=2" not in first and "device=cpu" in first
    assert "experiment=paper/mnist,paper/svhn" in first and "method=explicit,jfb" in first
    # the quick profile: its W&B group, two runs at once unless a launcher is given
    quick = commands(sweeps.get_profile("quick"), (0,), tmp_path / "runs", tmp_path / "data", ("mnist",), None, [])
    assert all("logger.group=reproduce-quick" in c and "hydra/launcher=joblib" in c and "hydra.launcher.n_jobs=2" in c
               and "threads=1" in c for c in quick)
    for clash in ("method=jfb", "diagnostics.every=5", "seed=3"):  # diagnostics on every run would time the checks
        with pytest.raises(SystemExit, match="set by the sweep"):
            commands(prof, (0,), tmp_path, tmp_path, sweeps.DATASETS, None, [clash])


def test_check_data_detects_files(tmp_path: Path):
    from fakedata import write_mnist

    quick = sweeps.get_profile("quick")
    assert check_data(quick, tmp_path, allow_download=False, dry_run=False) == {
        "mnist": "no data", "svhn": "no data", "cifar10": "no data"}
    write_mnist(tmp_path, n_train=20, n_test=10)
    assert check_data(quick, tmp_path, allow_download=False, dry_run=False) == {"svhn": "no data", "cifar10": "no data"}
    assert check_data(sweeps.get_profile("smoke"), tmp_path / "none", allow_download=False, dry_run=False) == {}


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


def _reference_record(folder: Path, wall_per_epoch: float, epochs: int, callback_s: float = 0.0,
                      device: str = "Test CPU") -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "epochs_completed": epochs, "wall_time_per_epoch_s": wall_per_epoch,
        "callback_time_s": callback_s, "device_name": device}))


def test_dry_run_prints_its_plan_commands_and_an_estimate_naming_its_source(tmp_path: Path, capsys):
    from fakedata import write_mnist

    write_mnist(tmp_path / "data", n_train=20, n_test=10)
    args = ["--profile", "quick", "--data-dir", str(tmp_path / "data"), "--results-root", str(tmp_path / "res"),
            "--reference-root", str(tmp_path / "ref"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # MNIST alone: 21 timed runs (Tables 1-2 over the profile's 3 seeds, Table 3, Figure 6, the CG table), 7 with
    # diagnostics
    assert "28 runs in 13 multiruns" in out and "seeds 0 1 2 (Tables 1-2; the other runs seed 0)" in out and out.count("-m jfb.train -m") == 13
    assert out.count("diagnostics.every=50") == 7
    assert out.count(": new, 4 epoch(s) to train") == 28
    assert f"time: no estimate (28 runs to train; no record of them in {tmp_path / 'ref' / 'quick' / 'runs'})" in out
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    # the committed reference holds one of the runs: the estimate says what it took there, and where
    name = next(line.split()[1].rstrip(":") for line in out.splitlines() if "paper-mnist_ift-exact_s0_" in line)
    _reference_record(tmp_path / "ref" / "quick" / "runs" / name, wall_per_epoch=1800.0, epochs=4)
    assert main(args) == 0
    out = capsys.readouterr().out
    # 4 epochs of 1800 s, two runs at once: 1.0 h
    assert "time: about 1.0 h for 1 of the 28 runs to train: what they took in the committed reference records " \
           "(Test CPU, 2 run(s) at once)" in out
    assert not (tmp_path / "res").exists()


def test_estimate_arithmetic(tmp_path: Path):
    """(whole epoch + checks per epoch) x epochs left, from the reference's records, over the runs at once."""
    from jfb.training.run import Plan

    ref = tmp_path / "ref"
    _reference_record(ref / "a", wall_per_epoch=600.0, epochs=4, callback_s=1200.0)  # 600 + 300 s per epoch
    _reference_record(ref / "b", wall_per_epoch=300.0, epochs=2, device="Other CPU")
    planned = [(None, 0, tmp_path / "a", Plan("new", None, 4)), (None, 0, tmp_path / "b", Plan("resume", None, 2)),
               (None, 0, tmp_path / "c", Plan("new", None, 4)), (None, 0, tmp_path / "d", Plan("skip", None, 0)),
               (None, 0, tmp_path / "e", "refused: another run's folder")]
    # a: 4 x 900 = 3600 s; b: 2 x 300 = 600 s -> 4200 s = 1.17 h; c is not in the reference; d is done, e refused
    assert estimate(planned, ref, 1) == ("about 1.2 h for 2 of the 3 runs to train: what they took in the committed "
                                         "reference records (Other CPU; Test CPU, 1 run(s) at once); a slower or "
                                         "busier machine takes longer")
    assert estimate(planned, ref, 2).startswith("about 0.6 h for 2 of the 3 runs")
    assert estimate(planned[3:4], ref, 1) == "nothing to train"
    assert estimate(planned[2:3], ref, 1) == f"no estimate (1 runs to train; no record of them in {ref})"


def test_plan_skips_completed_runs_and_extends_shorter_ones(tmp_path: Path):
    """The plan reads each run's folder as the trainer will: the folder name comes from the composed config, a
    completed run of the asked epochs is skipped, a shorter one extended (from its checkpoints)."""
    prof = sweeps.get_profile("quick")
    runs_dir = tmp_path / "runs"
    overrides = run_overrides(prof, runs_dir, tmp_path / "data", [])
    planned = plan_runs(prof, (0, 1), overrides, runs_dir, ("mnist",))
    assert len(planned) == 25  # Tables 1-2's three MNIST runs on both seeds, the 19 others on seed 0
    first, second = planned[0], planned[1]
    assert [p.action for *_, p in planned] == ["new"] * 25
    assert first[2].name.startswith(f"paper-mnist_{first[0].label}_s0_") and first[0].all_seeds
    assert (first[1], second[0], second[1]) == (0, first[0], 1)  # the same spec, seed 1
    for (_, _, folder, _), done in ((first, 4), (second, 1)):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"status": "completed", "epochs_completed": done}))
    (second[2] / "checkpoints").mkdir()
    (second[2] / "checkpoints" / "epoch_0001.pt").write_bytes(b"")
    again = plan_runs(prof, (0, 1), overrides, runs_dir, ("mnist",))
    assert [(p.action, p.epochs_left) for *_, p in again[:3]] == [("skip", 0), ("extend", 3), ("new", 4)]
    # a folder holding a run of other settings is refused, and the plan says why instead of training over it
    (second[2] / "identity.json").write_text(json.dumps({"identity": {"seed": 99}}))
    refused = plan_runs(prof, (0, 1), overrides, runs_dir, ("mnist",))[1][3]
    assert isinstance(refused, str) and "holds a run with other settings" in refused
