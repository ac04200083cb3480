"""ttt-infer: fast, verified inference for TTT-Linear and TTT-MLP language models."""

from .checkpoint import load_pretrained, save_pretrained
from .config import TTTConfig
from .model import TTTForCausalLM

__version__ = "0.1.0"
__all__ = ["TTTConfig", "TTTForCausalLM", "load_pretrained", "save_pretrained", "__version__"]
