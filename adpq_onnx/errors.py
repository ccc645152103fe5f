"""Errors meant for users: the CLI prints their message (no traceback) and exits with 2."""


class UserError(Exception):
    """Bad input or options; the message names the file, node, tensor or dimension."""
