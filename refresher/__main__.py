"""`python -m refresher` is `token-refresher`."""

from .cli import console

console()
