"""ttt-infer: fast, verified inference for TTT-Linear and TTT-MLP language models."""

from .config import TTTConfig
from .model import TTTForCausalLM

__version__ = "0.1.0"
__all__ = ["TTTConfig", "TTTForCausalLM", "load_pretrained", "__version__"]


def __getattr__(name: str):
    if name == "load_pretrained":
        from .checkpoint import load_pretrained

        return load_pretrained
    raise AttributeError(name)
