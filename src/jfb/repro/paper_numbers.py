"""THE PAPER'S NUMBERS (reference only, never ours).

Everything here is quoted from Fung, Heaton et al., "JFB: Jacobian-Free Backpropagation for Implicit
Networks", AAAI 2022 (Tables 1 and 2), as printed in the paper. The tables built by
:mod:`jfb.repro.tables` print these beside the numbers computed from our run records; nothing in
this module is ever computed, and no number of ours is ever written here.

Each value keeps the paper's printed text (``text``) next to its numeric value (``value``) so that
the markdown shows exactly what the paper printed while the CSV carries numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

# Hardware of every number below (S1): "a single NVIDIA TITAN X GPU with 12GB RAM".
PAPER_HARDWARE = "NVIDIA TITAN X (12 GB)"

# Footnote marks of the paper's Table 1 caption.
SOURCES = {
    "dagger": "† as reported in Dupont, Doucet & Teh 2019 (Augmented Neural ODEs)",
    "ddagger": "‡ as reported in Winston & Kolter 2020 (monotone operator equilibrium networks, MON)",
    "aug": "* with data augmentation",
}


@dataclass(frozen=True)
class Quoted:
    """One number as the paper printed it."""

    text: str
    value: float


@dataclass(frozen=True)
class Table1Row:
    """A row of the paper's Table 1.

    ``ours`` names the run that regenerates the row (``"jfb"`` or ``"explicit"``); ``None`` marks a
    literature row that the paper quoted from another work and that we quote in turn, never run.
    """

    dataset: str
    method: str
    size: Quoted
    acc: Quoted
    ours: str | None
    source: str  # where the paper took the row from


# Table 1 (S1): "Test accuracy of JFB-trained Implicit ResNet compared to Neural ODEs, Augmented
# NODEs, and MONs; † as reported in (Dupont, Doucet, and Teh 2019); ‡ as reported in (Winston and
# Kolter 2020); * with data augmentation". Order as printed.
TABLE1: tuple[Table1Row, ...] = (
    Table1Row("mnist", "Explicit", Quoted("54K", 54e3), Quoted("99.4", 99.4), "explicit", "authors' run"),
    Table1Row("mnist", "Neural ODE †", Quoted("84K", 84e3), Quoted("96.4", 96.4), None, "Dupont et al. 2019"),
    Table1Row("mnist", "Aug. Neural ODE †", Quoted("84K", 84e3), Quoted("98.2", 98.2), None, "Dupont et al. 2019"),
    Table1Row("mnist", "MON ‡", Quoted("84K", 84e3), Quoted("99.2", 99.2), None, "Winston & Kolter 2020"),
    Table1Row("mnist", "JFB-trained Implicit ResNet (ours)", Quoted("54K", 54e3), Quoted("99.4", 99.4), "jfb",
              "authors' run"),
    Table1Row("svhn", "Explicit", Quoted("164K", 164e3), Quoted("93.7", 93.7), "explicit", "authors' run"),
    Table1Row("svhn", "Neural ODE †", Quoted("172K", 172e3), Quoted("81.0", 81.0), None, "Dupont et al. 2019"),
    Table1Row("svhn", "Aug. Neural ODE †", Quoted("172K", 172e3), Quoted("83.5", 83.5), None, "Dupont et al. 2019"),
    Table1Row("svhn", "MON (Multi-tier lg) ‡", Quoted("170K", 170e3), Quoted("92.3", 92.3), None,
              "Winston & Kolter 2020"),
    Table1Row("svhn", "JFB-trained Implicit ResNet (ours)", Quoted("164K", 164e3), Quoted("94.1", 94.1), "jfb",
              "authors' run"),
    # CIFAR-10: the paper's "Explicit" row is ResNet-56 quoted from He et al. 2016, not the authors'
    # explicit twin; our explicit twin therefore has no paper row beside it.
    Table1Row("cifar10", "Explicit (ResNet-56)*", Quoted("0.85M", 0.85e6), Quoted("93.0", 93.0), None,
              "He et al. 2016"),
    Table1Row("cifar10", "MON (Multi-tier lg) ‡*", Quoted("1.01M", 1.01e6), Quoted("89.7", 89.7), None,
              "Winston & Kolter 2020"),
    Table1Row("cifar10", "JFB-trained Implicit ResNet (ours)*", Quoted("0.84M", 0.84e6), Quoted("93.7", 93.7), "jfb",
              "authors' run"),
    Table1Row("cifar10", "Multiscale DEQ*", Quoted("10M", 10e6), Quoted("93.8", 93.8), None,
              "Bai, Koltun & Kolter 2020"),
)


@dataclass(frozen=True)
class Table2Row:
    """A row of the paper's Table 2. ``ours`` is ``"ift"`` (Jacobian-based) or ``"jfb"``."""

    dataset: str
    method: str
    time_per_epoch_s: Quoted
    matvecs: Quoted
    acc: Quoted
    ours: str


# Table 2 (S1): "Comparison of Jacobian-based backpropagation (first three rows) and our proposed JFB
# approach. "Mat-vecs" denotes matrix-vector products." Whether the mat-vec count is per epoch or per
# run is not stated (UNCERTAIN); the authors' code logs niter x batch_size per epoch.
TABLE2: tuple[Table2Row, ...] = (
    Table2Row("mnist", "Jacobian based", Quoted("28.4", 28.4), Quoted("6.0 × 10^6", 6.0e6), Quoted("99.2", 99.2), "ift"),
    Table2Row("svhn", "Jacobian based", Quoted("92.8", 92.8), Quoted("1.4 × 10^7", 1.4e7), Quoted("90.1", 90.1), "ift"),
    Table2Row("cifar10", "Jacobian based", Quoted("530.9", 530.9), Quoted("9.7 × 10^8", 9.7e8), Quoted("87.9", 87.9),
              "ift"),
    Table2Row("mnist", "JFB", Quoted("17.6", 17.6), Quoted("0", 0.0), Quoted("99.4", 99.4), "jfb"),
    Table2Row("svhn", "JFB", Quoted("36.9", 36.9), Quoted("0", 0.0), Quoted("94.1", 94.1), "jfb"),
    Table2Row("cifar10", "JFB", Quoted("146.6", 146.6), Quoted("0", 0.0), Quoted("93.67", 93.67), "jfb"),
)


def table2_row(dataset: str, ours: str) -> Table2Row:
    """The paper's Table 2 row for ``dataset`` and method ``ours`` ("ift" or "jfb")."""
    for row in TABLE2:
        if row.dataset == dataset and row.ours == ours:
            return row
    raise KeyError((dataset, ours))


def table2_speedup(dataset: str) -> float:
    """The paper's per-epoch speed-up of JFB over Jacobian-based, computed from its Table 2 times
    (1.61x, 2.51x, 3.62x); a ratio of two printed numbers, not a printed number itself."""
    return table2_row(dataset, "ift").time_per_epoch_s.value / table2_row(dataset, "jfb").time_per_epoch_s.value
