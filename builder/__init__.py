"""builder: reproducible, checked torch + vLLM runtimes for a GPU inference host."""

__version__ = "0.1.0"
