"""The local stack's AWS: moto's own server, without two costs it pays on every request.

On every request moto's server lists its own package folder (one ``isdir`` per service, ~200)
to route the request, and logs an access line (which the local stack discards). Here the
server shares two CPUs with the encoders, so both showed in every end-to-end timing: together
a third of the server's CPU per S3 GET (``make bench``'s CPU split). The folder listing is fixed
for an installed moto, so it is taken once; access logging is turned off. Everything else,
routing and AWS behaviour included, is moto's, unchanged.

Run as ``python -m devstack.moto_server -H 127.0.0.1 -p PORT`` (moto.server's arguments).
"""

from __future__ import annotations

import logging
import sys


def quieten() -> bool:
    """Apply both changes; ``False`` (moto left as it is) if this moto has no such function."""
    import moto.backends as backends

    listing = getattr(backends, "list_of_moto_modules", None)
    if listing is None:
        return False
    modules = tuple(listing())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return True


def main(argv: list[str] | None = None) -> None:
    quieten()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
