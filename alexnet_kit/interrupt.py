"""How long jobs end on SIGTERM and SIGINT: finish the step, save, one line, exit 128 + the signal.

``timeout``, SLURM pre-emption, systemd and container runtimes stop a job
with SIGTERM, usually sent to the whole process group; a person presses
Ctrl-C (SIGINT, also to the whole group). Either way the job should lose
nothing. So a long job (``train``, ``prepare``, ``index build``,
``features``, ``reproduce``) runs inside :class:`StopOnSignal`:

* the first signal only sets :attr:`StopOnSignal.signum`; the job's loop
  looks at it between steps, saves what it has and raises
  :class:`Interrupted`, which the CLI turns into one line on stderr and
  exit status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT);
* helper processes (loader workers, packing pool) ignore both signals
  (:func:`ignore_in_worker`, started inside :func:`starting_workers`): the
  ending is the main process's business, and a worker killed by the group's
  SIGTERM would crash the main process instead;
* a second signal aborts at once (one line, then the process exits with 128 + that signal,
  from the handler itself: unwinding would stop loader workers mid-transfer, whose
  helper threads then print tracebacks; what was saved before stays), as a second Ctrl-C
  always has, unless it repeats the first within :data:`REPEAT_WINDOW`
  seconds: one stop delivered twice (the process group's copy and the copy
  torchrun forwards to its workers) is still one request to stop cleanly.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

#: a second copy of the same signal this soon after the first is the same request (see above)
REPEAT_WINDOW = 2.0

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A job stopped by a signal after saving its work; ``str()`` says what was saved and how to go on."""

    def __init__(self, signum: int, message: str):
        self.signum = int(signum)
        super().__init__(message)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopOnSignal:
    """While active (a ``with`` block in the main thread), SIGINT and SIGTERM ask the job to stop.

    ``notice``, printed once on the first signal, tells the user what happens
    now (e.g. "finishing this step, saving a checkpoint"); None prints nothing
    (a DDP rank other than 0). Outside the main thread (where Python cannot
    install handlers) it does nothing and :attr:`signum` stays None.
    """

    def __init__(self, notice: str | None = "finishing the current step and saving"):
        self.notice = notice
        self.signum: int | None = None
        self._when = 0.0
        self._old: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def raise_if_requested(self, message: str) -> None:
        """Raise :class:`Interrupted` with ``message`` when a signal came (call it once the work is saved)."""
        if self.signum is not None:
            raise Interrupted(self.signum, message)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked worker before it set its own dispositions
            return
        now = time.monotonic()
        if self.signum is not None:
            if signum == self.signum and now - self._when < REPEAT_WINDOW:
                return  # the same stop, delivered twice
            abort(signum)  # a second request: stop now
        self.signum, self._when = signum, now
        if self.notice:
            print(f"\n{signal_name(signum)}: {self.notice} (again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def abort(signum: int) -> None:
    """End the process now, with one line and exit status 128 + ``signum``; no cleanup runs."""
    print(f"alexnet-kit: aborted ({signal_name(signum)})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def ignore_in_worker(*_args) -> None:
    """For a helper process (DataLoader ``worker_init_fn``, Pool ``initializer``): SIGINT and SIGTERM
    sent to the process group are the main process's to handle; it ends the workers itself.
    Unblocks them too (see :func:`starting_workers`): one that came while they were blocked is dropped."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextlib.contextmanager
def starting_workers():
    """Start helper processes inside this block. A new process would otherwise be killed by the group's
    SIGTERM (or interrupted by its SIGINT) before :func:`ignore_in_worker` runs: a spawned interpreter
    starts with the default actions, and a forked DataLoader worker installs torch's own SIGTERM handler
    first. Here both signals are blocked in the calling thread, and the mask passes to the new process
    through fork and exec; a signal that comes meanwhile waits and reaches this process's handler at
    the end of the block. Only for workers that call :func:`ignore_in_worker` (which unblocks them)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
