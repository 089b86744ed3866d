"""Small helpers for the entry points (Hydra resolvers, instantiation, run bookkeeping)."""


def wide_console():
    """A rich console; wide when writing to a file or CI log, so tables are not squeezed."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)
