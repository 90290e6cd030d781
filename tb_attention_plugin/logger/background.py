"""`BackgroundWriter`: a capture's encoding and writing, on a thread of its own.

A capture's forward passes and head-health measures read the model, so they run on the
training thread at the step they describe; what follows only reads their numpy results:
encoding the faithful codes and writing the event file. `BackgroundWriter` runs that part on one
worker thread, in submission order, so training goes on meanwhile. Nothing submitted is lost:

- `drain()` (the logger's `on_train_end`) waits until every submitted write is done;
- at interpreter exit (the end of the script, an exception out of `fit`, `KeyboardInterrupt`
  from Ctrl-C) an `atexit` hook drains it before the process ends;
- a write that raises is reported through `on_error` (one warning, on the training thread by way
  of `problems.Problems`), and the worker goes on with the next one;
- at most `max_pending` writes wait: a slow disk slows the captures, never grows memory.

Example:

```python
background = BackgroundWriter()
background.submit(lambda: writer.write(items, scalars, step), on_error=report)
background.drain()   # everything written
```
"""

import atexit
import threading
import weakref

DEFAULT_MAX_PENDING = 2


class BackgroundWriter:
    """Runs submitted jobs one at a time, in order, on a daemon worker thread."""

    def __init__(self, max_pending=DEFAULT_MAX_PENDING):
        self._max_pending = int(max_pending)
        self._jobs = []  # (job, on_error), oldest first
        self._busy = False  # the worker is running a job
        self._changed = threading.Condition()
        self._thread = None
        drain = weakref.WeakMethod(self.drain)
        atexit.register(lambda: drain() and drain()())

    @property
    def pending(self):
        """Jobs submitted and not finished."""
        with self._changed:
            return len(self._jobs) + self._busy

    def submit(self, job, on_error):
        """Queues `job()`; `on_error(exception)` is called if it raises. Waits while
        `max_pending` jobs wait already. Without a worker (it could not start) runs it here."""
        with self._changed:
            if not self._worker_alive():
                self._jobs.clear()  # a dead worker ran nothing more: nothing is queued twice
                run_inline = True
            else:
                self._wait_while(lambda: len(self._jobs) >= self._max_pending)
                self._jobs.append((job, on_error))
                self._changed.notify_all()
                run_inline = False
        if run_inline:
            _run(job, on_error)

    def drain(self):
        """Waits until every submitted job has run."""
        with self._changed:
            if self._thread is not None:
                self._wait_while(lambda: self._jobs or self._busy)

    def _wait_while(self, condition):
        """Waits (holding `_changed`) while `condition()` holds and the worker lives."""
        while condition() and self._thread.is_alive():
            self._changed.wait(0.1)

    def _worker_alive(self):
        if self._thread is None:
            try:
                self._thread = threading.Thread(target=self._work, name="AttentionLogger writer",
                                                daemon=True)
                self._thread.start()
            except RuntimeError:  # e.g. at interpreter shutdown: no new threads
                self._thread = None
                return False
        return self._thread.is_alive()

    def _work(self):
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs)
                job, on_error = self._jobs.pop(0)
                self._busy = True
                self._changed.notify_all()
            try:
                _run(job, on_error)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


def _run(job, on_error):
    try:
        job()
    except Exception as e:  # the worker must survive whatever one write raises
        try:
            on_error(e)
        except Exception:
            pass  # e.g. warnings turned into errors: training and the worker go on
