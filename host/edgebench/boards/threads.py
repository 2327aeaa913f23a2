"""Work on several boards at once: one thread each, and Ctrl-C (or SIGTERM) reaching all of them.

Python delivers a signal to the main thread only; a board's run in another thread would go on, holding its board
(and a labgrid place) after `bench` was told to stop. So the interrupt is passed on to every thread still working,
as the KeyboardInterrupt it would have been: each kills its run on the board, stores it as interrupted, releases
what it holds, and ends; then the interrupt is raised in the main thread. Any other exception in a thread (a bug)
is raised in the main thread once every thread is done, never lost.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable

# After an interrupt, how long a thread may take to store its run and let go of its board (killing a run on a slow
# board is a small command with its own 120 s limit).
STOP_WAIT_S = 150.0


def run_all(functions: list[Callable[[], None]], name: str = "board") -> None:
    """Run each function in its own thread; return when all are done (one function: in this thread)."""
    if len(functions) == 1:
        functions[0]()
        return
    # Each thread says it is done with an Event: a Thread.join() cut short by KeyboardInterrupt can leave that
    # thread reporting is_alive() False while it still runs (CPython), and it would miss the interrupt.
    done = [threading.Event() for _ in functions]
    failures: list[BaseException] = []

    def guarded(function, finished):
        def run():
            try:
                function()
            except KeyboardInterrupt:  # passed on from the main thread: the thread's run is stored and let go of
                pass
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread below
                failures.append(exc)
            finally:
                finished.set()
        return run

    threads = [threading.Thread(target=guarded(f, d), name=f"{name} {i}", daemon=True)
               for i, (f, d) in enumerate(zip(functions, done))]
    try:
        for thread in threads:
            thread.start()
        for finished in done:
            while not finished.wait(0.2):  # bounded waits: the main thread stays interruptible
                pass
    except KeyboardInterrupt:
        for thread, finished in zip(threads, done):
            if thread.ident is not None and not finished.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                           ctypes.py_object(KeyboardInterrupt))
        for thread, finished in zip(threads, done):
            if thread.ident is not None:
                finished.wait(STOP_WAIT_S)
        raise
    if failures:
        raise failures[0]
