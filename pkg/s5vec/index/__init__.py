from .base import Index, ChunkReader, ChunkWriter
