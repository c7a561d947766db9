"""S5 transport layer: blob CIDs, BLAKE3 hashing, portal client and a local portal."""
from .cid import BlobId, blob_cid, hash_hex, normalize, verify
from .client import BlobClient, MemoryClient, PortalClient
from .hashing import blake3

__all__ = [
    "BlobId",
    "blob_cid",
    "hash_hex",
    "normalize",
    "verify",
    "blake3",
    "BlobClient",
    "PortalClient",
    "MemoryClient",
]
