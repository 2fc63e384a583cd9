"""How `kit run` drives the notebook's kernel: Ctrl-C and SIGTERM reach it as an interrupt, and shutting it
down makes no noise.

papermill, left alone, answers Ctrl-C or SIGTERM by shutting the kernel down. kit.execute inside it then
never learns that the user pressed stop, so it cannot do what stop means (kit.api): cancel the run's
working orders, wait a bounded time for the broker's word, record the interruption. Here the signal becomes
the kernel interrupt JupyterLab's stop button sends, and kit run keeps waiting for the running cell: the
first interrupt cancels, the second tells kit.execute to stop waiting for the broker's confirmations (the
unconfirmed orders stay working, and it says so), the third stops waiting for the kernel and lets papermill
shut it down. No cell starts after an interrupt; the one that did not run says why in the output notebook.

jupyter_client interrupts every kernel before asking it to shut down. ipykernel ignores SIGINT while idle,
except in the moment between sending a reply and restoring its "ignore", where it logs "KeyboardInterrupt
caught in kernel" at ERROR on kit run's terminal. nbclient shuts down right after its last reply, so that
happened at random. The kernel manager here skips that interrupt when no cell is running: it is what stops
a busy kernel (a cell past --execution-timeout, a third Ctrl-C), and useless to an idle one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from traitlets import Instance, Unicode

ENGINE = "kit"  # papermill's name for the engine below
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What kit run says on each signal while a cell runs: (first, second); a third stops waiting for the kernel.
ON_SIGNAL = (
    "kit: interrupted ({signal}): the notebook's kernel is cancelling the run's working orders and waiting "
    "for the broker's confirmation (interrupt again to stop waiting and leave them working)",
    "kit: interrupted again ({signal}): the kernel stops waiting for cancel confirmations; unconfirmed "
    "orders stay working (a third interrupt stops the kernel)",
)
BETWEEN_CELLS = "kit: interrupted ({signal}): no further cell runs"
GIVE_UP = "kit: interrupted a third time ({signal}): stopping the kernel without waiting for the cell"


class KernelManager(AsyncKernelManager):
    """jupyter_client's manager, told by the client below whether a cell is running."""

    busy = False  # a cell was sent to the kernel and its reply has not come
    loop: asyncio.AbstractEventLoop | None = None  # the loop waiting for that reply
    _interrupting: asyncio.Future[None] | None = None
    stderr_log: str | None = None  # the kernel process's own standard error goes there, not to kit run's

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        """What a cell writes, C-level output included, reaches the output notebook (ipykernel watches the
        kernel's descriptors 1 and 2 while it runs). The process's own stderr then holds only its start-up
        and shutdown lines, e.g. libzmq's abort in ipykernel's shutdown race (`Assertion failed: pfd.revents
        & POLLIN`, after the last reply): kept in a file, shown by kit run when the kernel dies."""
        if self.stderr_log is None:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        with open(self.stderr_log, "wb") as stderr:  # this kernel's own (a re-run of the key reuses the name)
            return await super()._async_launch_kernel(kernel_cmd, **kw | {"stderr": stderr})

    def interrupt_cell(self) -> bool:
        """Interrupt the running cell, from a signal handler: the interrupt is sent by the loop that waits
        for the cell (jupyter_client's own interrupt_kernel: SIGINT to the kernel's process group, or an
        interrupt_request for a kernel that asks for one). False when no cell runs: an idle kernel would
        ignore it, and no further cell starts anyway."""
        if not self.busy or self.loop is None:
            return False
        self.loop.call_soon_threadsafe(self._interrupt_soon)
        return True

    def _interrupt_soon(self) -> None:
        task = self._interrupting = asyncio.ensure_future(self._async_interrupt_kernel())  # kept till done
        task.add_done_callback(_said_if_failed)

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down and not self.busy:
            return  # jupyter_client's pre-shutdown interrupt of an idle kernel: see the module's docstring
        await super()._async_interrupt_kernel()


class Interrupts:
    """The signals kit run received while the notebook ran. While `installed`, SIGINT and SIGTERM no longer
    raise KeyboardInterrupt in kit run (before the third); they interrupt the running cell."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None  # the first signal's name, e.g. SIGINT
        self.kernel: KernelManager | None = None

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
            yield self
            return
        previous = {number: signal.signal(number, self._received) for number in SIGNALS}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _received(self, number: int, frame: object) -> None:
        self.count += 1
        name = signal.Signals(number).name
        self.first = self.first or name
        if self.count > len(ON_SIGNAL):
            _say(GIVE_UP.format(signal=name))
            raise KeyboardInterrupt(f"kit run received {name} a third time and stopped waiting for the cell")
        running = self.kernel is not None and self.kernel.interrupt_cell()
        _say((ON_SIGNAL[self.count - 1] if running else BETWEEN_CELLS).format(signal=name))


def _said_if_failed(task: asyncio.Future[None]) -> None:
    """An interrupt that could not be sent is said: the user must not believe the kernel was told to stop."""
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        _say(f"kit: could not interrupt the notebook's kernel: {type(failure).__name__}: {failure}")


def _say(line: str) -> None:
    """Write straight to stderr's descriptor: a signal handler may run in the middle of another print."""
    os.write(sys.stderr.fileno(), (line + "\n").encode())


class NotebookClient(PapermillNotebookClient):
    """papermill's client, keeping its kernel manager told whether a cell runs, and starting no cell after
    an interrupt."""

    interrupts = Instance(Interrupts, allow_none=True)
    kernel_stderr = Unicode(None, allow_none=True, help="the file the kernel process's stderr goes to")

    def create_kernel_manager(self) -> Any:
        manager = super().create_kernel_manager()
        if isinstance(manager, KernelManager):
            manager.stderr_log = self.kernel_stderr
            if self.interrupts is not None:
                self.interrupts.kernel = manager
        return manager

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int, *args: Any, **kwargs: Any) -> Any:
        stop = self.interrupts
        if stop is not None and stop.count and cell.cell_type == "code" and cell.source.strip():
            cell.outputs = [new_output("error", ename="Interrupted", evalue=f"kit run received {stop.first} "
                                       "before this cell; it did not run", traceback=[])]
            raise CellExecutionError("", "Interrupted", f"kit run received {stop.first}")
        manager = self.km if isinstance(self.km, KernelManager) else None
        if manager is not None:
            manager.busy, manager.loop = True, asyncio.get_running_loop()
        try:
            result = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        except CellExecutionError:  # the kernel's reply says the cell failed: it is idle
            self._replied(manager)
            raise
        self._replied(manager)  # not after a timeout or a lost kernel: then it may still be busy
        return result

    @staticmethod
    def _replied(manager: KernelManager | None) -> None:
        if manager is not None:
            manager.busy = False

    execute_cell = run_sync(async_execute_cell)


class Engine(NBClientEngine):
    """papermill's nbclient engine with the client and kernel manager above."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                 execution_timeout: int | None = None, **kwargs: Any) -> Any:
        kwargs.pop("input_path", None)
        return NotebookClient(nb_man, kernel_name=kernel_name, timeout=execution_timeout,
                              startup_timeout=start_timeout, log=logger, log_output=log_output,
                              stdout_file=stdout_file, stderr_file=stderr_file,
                              kernel_manager_class=KernelManager, **kwargs).execute()


papermill_engines.register(ENGINE, Engine)
