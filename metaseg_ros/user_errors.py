"""How every command of the package reports a user error: one line on stderr, exit code 2.

A missing file, an unknown topic, an unsupported encoding, a bad argument: the user gets
``<prog>: error: <what is wrong, and what there is>`` and status 2, never a traceback.
Errors of the program itself still raise (with their traceback). METASEG_DEBUG=1 shows the
traceback of a user error too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

USER_ERROR_STATUS = 2


class UserError(Exception):
    """Input the user can fix (a path, a topic, an argument); its text says what and how."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR_STATUS, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(error: BaseException) -> str:
    """The error's text on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError):
        text = f"missing {text}"
    return text


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: our UserError, missing or unreadable files, bad
    values (ValueError covers image conversion, checkpoint, conversion and bag errors)."""
    return (UserError, OSError, ValueError)


def run_command(prog: str, main: Callable[[Sequence[str] | None], int],
                argv: Sequence[str] | None = None,
                extra: tuple[type[BaseException], ...] = ()) -> int:
    """Run `main(argv)`; a user error becomes one line on stderr and status 2 (argparse's
    exits, --help and bad arguments, are returned as status too)."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else USER_ERROR_STATUS
    except (*user_error_types(), *extra) as error:
        if os.environ.get("METASEG_DEBUG"):
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_STATUS
