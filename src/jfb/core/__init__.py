"""Core library: fixed-point solvers and gradient methods, independent of models, data and configs."""
from .fixed_point import fixed_point
from .methods import IFT, JFB, METHODS, GradientMethod, Neumann, Unrolled, make_method
from .stats import SolverStats

__all__ = ["fixed_point", "GradientMethod", "JFB", "IFT", "Neumann", "Unrolled", "METHODS", "make_method", "SolverStats"]
