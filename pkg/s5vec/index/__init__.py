"""Index kinds behind one protocol: flat (exact, the oracle), hnsw, ivf, hybrid."""
from .base import ChunkReader, ChunkWriter, Index

__all__ = ["ChunkReader", "ChunkWriter", "Index"]
