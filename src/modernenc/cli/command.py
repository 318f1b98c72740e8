"""What a subcommand is: its help line, how it adds its options, and what it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass


class CommandError(Exception):
    """A user-facing failure: the message names the problem and, where there is one, the fix."""


# Errors that carry a message meant for the user. Anything else is a bug and keeps its traceback.
USER_ERRORS = (CommandError, OSError, ValueError, RuntimeError, KeyError)


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]  # adds the subcommand's options and its example
    run: Callable[[argparse.Namespace], None]
    description: str | None = None  # longer text for `--help`; the help line when None

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.description = self.description or self.help
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        self.configure(parser)

    def add_to(self, subparsers: argparse._SubParsersAction, name: str) -> None:
        self.configure_parser(subparsers.add_parser(name, help=self.help))

    def invoke(self, args: argparse.Namespace, prog: str) -> None:
        """Run; a user error prints `PROG: error: MESSAGE` on stderr and exits 1, Ctrl-C exits 130."""
        try:
            self.run(args)
        except USER_ERRORS as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"{prog}: error: {message}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
