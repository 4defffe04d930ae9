"""jbench: a reproducible Japanese LLM benchmark harness (JP-stable semantics) with quantization comparisons."""

__version__ = "0.1.0"
