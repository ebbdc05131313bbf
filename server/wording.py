"""How the command line words what it counts: ``1 user``, ``2 users``."""


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """*number* and the noun that goes with it (*plural* defaults to *singular* + s)."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
