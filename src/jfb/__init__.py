"""JFB: Jacobian-Free Backpropagation for Implicit Networks (Fung, Heaton et al., AAAI 2022)."""
from .core import IFT, JFB, GradientMethod, Neumann, SolverStats, Unrolled, fixed_point, make_method

__version__ = "0.3.0"
__all__ = ["fixed_point", "GradientMethod", "JFB", "IFT", "Neumann", "Unrolled", "make_method", "SolverStats"]
