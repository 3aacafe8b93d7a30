"""``make bench``: the project's benchmark (never part of ``make test``)."""
