"""Errors a user can act on. Each names what was wrong, so a notebook cell fails with a readable message."""

from __future__ import annotations


class KitError(Exception):
    """Base class: anything kit refuses to do, with the reason."""


class ConfigError(KitError):
    """kit.toml, a KIT_* variable or a risk limit kit cannot use: the message names the file or variable, the
    key and what was expected. Nothing runs on a configuration kit cannot read exactly as written."""


class ValidationError(KitError, ValueError):
    """A targets frame had bad rows. Nothing was sent and nothing was written.

    `problems` holds (row, reason) pairs; row is None for a frame-level problem (e.g. an unknown column).
    """

    def __init__(self, problems: list[tuple[str | None, str]]):
        self.problems = list(problems)
        lines = [f"  {row}: {reason}" if row else f"  {reason}" for row, reason in self.problems]
        super().__init__(
            f"{len(self.problems)} problem(s) in the targets frame; nothing was sent:\n" + "\n".join(lines)
        )


class PayloadConflictError(KitError):
    """A run_key was executed again with a different order under an existing client_order_id.

    Resuming must never silently change what was already sent; the user picks a new run_key instead.
    """


class LiveAccountError(KitError):
    """An order would go to an account that is not a paper account and live trading was not allowed."""


class BrokerUnavailableError(KitError):
    """The broker could not be reached; nothing was sent."""


class BrokerMessageError(KitError):
    """A broker message kit cannot read (an IB status word or time it does not know). Following the order
    on would mean guessing what it says: the run stops with the message."""


class HaltedError(KitError):
    """The halt switch is on: no new order is sent until it is cleared (`kit halt --clear`)."""


class LedgerBusyError(KitError):
    """Another process held the ledger for longer than kit was willing to wait."""


class RiskError(KitError):
    """strict=True and at least one order broke a limit: the whole run stops and nothing is sent."""


class ScheduleError(KitError, ValueError):
    """A job file or scheduler state that cannot be used; the message names the job and the field."""


class RunKeyBusyError(KitError):
    """Another live process is executing this run key right now; the message names it (pid, host, start)."""


class JobLocked(KitError):
    """Another process is running this job right now."""


class RunFailed(KitError):
    """A scheduled notebook run failed; its run row holds the error."""


class LedgerWriteError(KitError):
    """A batch could not be made durable (a full disk, an I/O error): it is in neither the ledger nor its
    journal. The message names the file. The engine must stop sending new orders: what it sends now could
    not be recorded, and an unrecorded order may be sent again on resume."""


class InputError(ValidationError):
    """Bad input other than a targets frame (prices, capital, weights, lot size, run key): the same
    `problems` list of (key, reason) pairs, and a message that names the input instead of the frame."""

    def __init__(self, what: str, problems: list[tuple[str | None, str]]):
        super().__init__(problems)
        lines = [f"  {key}: {reason}" if key else f"  {reason}" for key, reason in self.problems]
        self.args = (f"{len(self.problems)} problem(s) in {what}; nothing was sent:\n" + "\n".join(lines),)


class LedgerIdentityError(KitError):
    """The file is not the ledger kit may write: another program's DuckDB database, a ledger of a newer
    schema, or (during a run) a ledger that disappeared or was replaced. Nothing was written to it."""


class RunInterrupted(KitError):
    """The task running a run was cancelled (a kernel interrupt, Ctrl-C, SIGTERM, or an async caller's
    cancel). The engine has already asked the broker to cancel the working orders and waited, for a bounded
    time, for its word; `run` is the run as it stood afterwards, and its notes say what was left working."""

    def __init__(self, message: str, run: object = None):
        super().__init__(message)
        self.run = run


class Interrupted(KeyboardInterrupt):
    """What the blocking calls (kit.execute, kit.plan, kit.cancel) raise after an interrupt: a
    KeyboardInterrupt, so a notebook stops at this cell and a script stops, but with kit's short account of
    what it did (in Jupyter, instead of a traceback) and the run in `run` (None if no run had started)."""

    def __init__(self, message: str, run: object = None):
        super().__init__(message)
        self.run = run

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback: the interrupt was the user's, not a bug."""
        return [f"Interrupted: {self}"]


class UsageError(KitError):
    """The command line itself was wrong (argparse's complaint): `kit: <message>`, exit 2."""


class UntranslatableMessage(BrokerMessageError, ValueError):
    """An IB message kit cannot read."""
class CurrencyError(KitError):
    """Money in one currency was to be compared with, or added to, money in another, and the user gave no
    rate for it. kit never guesses a rate: the message says how to give one (fx_rates)."""


class ContractError(KitError):
    """A contract could not be qualified (unknown, ambiguous, expired): nothing was sent. The message lists
    the broker's candidates so the row can say which one it means."""
