"""A data-loader worker stays quiet when the main process drops a tensor hand-off mid-way.

Workers pass each batch's tensors to the main process as file descriptors, through a
resource-sharer thread. A main process stopped by SIGTERM can drop that connection in the
middle of its handshake; the worker's thread then printed a ``ConnectionResetError``
traceback over the clean stop (seen once in CI, in
``test_sigterm_to_the_process_group_stops_data_loader_workers_quietly``). Here the race is
made certain: a real forked worker, set up as ``make_loader`` sets its workers up, shares a
descriptor, and the test connects to its sharer and hangs up before the handshake.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import multiprocessing as mp, os, socket, sys, threading, time
    from multiprocessing import resource_sharer
    from fcn_edge.train.loader import _worker_stops_quietly

    def worker(conn):
        _worker_stops_quietly(0)
        dup = resource_sharer.DupFd(os.pipe()[0])
        conn.send(dup._id[0])            # the address of the worker's resource sharer
        conn.recv()                       # the main process has hung up
        time.sleep(0.5)                   # the sharer thread has met the dropped connection
        if sys.argv[1] == "other-error":  # a real fault, reported as the sharer reports one
            thread = threading.Thread(target=report_a_fault)
            thread.start()
            thread.join()
        os._exit(0)

    def report_a_fault():
        try:
            1 / 0
        except ZeroDivisionError:
            sys.excepthook(*sys.exc_info())

    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    process = ctx.Process(target=worker, args=(there,))
    process.start()
    peer = socket.socket(socket.AF_UNIX)
    peer.connect(here.recv())
    peer.close()
    here.send(1)
    process.join()
    sys.exit(process.exitcode)
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER, mode], capture_output=True, text=True,
                          timeout=60)


def test_a_hand_off_dropped_by_the_main_process_prints_nothing_in_the_worker():
    done = _run("hang-up")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_other_errors_on_a_worker_thread_are_still_reported():
    done = _run("other-error")
    assert done.returncode == 0, done.stderr
    assert "ZeroDivisionError" in done.stderr, done.stderr
    assert "ConnectionResetError" not in done.stderr, done.stderr
