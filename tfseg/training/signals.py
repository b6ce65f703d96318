"""SIGTERM and SIGINT end a run between two steps, never inside one.

`docker stop`, Kubernetes and Slurm send SIGTERM; a person presses Ctrl-C (SIGINT). Python's default
handlers either kill the process at once (no checkpoint) or raise KeyboardInterrupt wherever the
interpreter happens to be, e.g. after the optimizer update but before the step counter moves, so a
checkpoint would disagree with itself. While training, `StopRequests` only records the signal; the
trainer checks it after each whole step, writes a checkpoint and exits with the conventional status
(128 + the signal's number). A second signal while stopping restores the default behaviour.
"""
import signal
import threading


class Stopped(Exception):
    """Training stopped on a signal after writing a checkpoint; `exit_code` is 128 + signum."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequests:
    """Context manager: records SIGTERM/SIGINT in `self.signum` instead of acting on them."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _record(self, signum, frame):
        del frame
        if self.signum is not None:  # a second signal: the user insists
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else ""
