"""Core library: fixed-point solvers and gradient methods, independent of models, data and configs."""
from .fixed_point import fixed_point
from .hooks import FixedPointRecord, capture_fixed_points, override_method
from .methods import IFT, JFB, METHODS, GradientMethod, Neumann, Unrolled, make_method
from .solvers import SOLVERS
from .stats import SolverStats

__all__ = ["fixed_point", "GradientMethod", "JFB", "IFT", "Neumann", "Unrolled", "METHODS", "make_method",
           "SolverStats", "override_method", "capture_fixed_points", "FixedPointRecord", "SOLVERS"]
