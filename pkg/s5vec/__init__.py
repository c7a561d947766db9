"""s5vec: a hybrid HNSW + IVF vector index stored as content-addressed CBOR chunks on S5.

Runs on CPython (build, publish, search from the ``s5vec`` CLI) and inside Pyodide in a
web worker (search only the chunks a query needs, fetched from S5 portals and verified).
"""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    CIDError, ClosedError, DimensionError, FilterError, FormatError, IntegrityError, InvalidArgumentError,
    InvalidVectorError, NotFoundError, PortalError, S5VecError, UnknownIdError,
)

__all__ = [
    "__version__", "S5VecError", "InvalidVectorError", "DimensionError", "InvalidArgumentError", "UnknownIdError",
    "FilterError", "FormatError", "CIDError", "IntegrityError", "PortalError", "NotFoundError", "ClosedError",
]
