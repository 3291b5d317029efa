# Drive the upstream asyncio loop one task resumption at a time (memory test).
#
# step() is one iteration of asyncio.core.run_until_complete: pop the next task,
# resume it, and settle its completion exactly as upstream does.  Simulated time
# (FakeClock) means every task is due at once, so the wait for the head of the
# queue is skipped.  The memory test calls step() from separate top-level runs
# of the interpreter so the WebAssembly port's GC can work between them.

from asyncio import core

_main = None


def start(coro):
    global _main
    core.new_event_loop()
    _main = core.create_task(coro)
    return _main


def done():
    return not _main.state


def step():
    """Resume one task.  Returns False once the main task has finished."""
    t = core._task_queue.peek()
    if not t:
        if not _main.state:
            return False
        raise RuntimeError("no runnable task")
    t = core._task_queue.pop()
    core.cur_task = t
    try:
        exc = t.data
        if not exc:
            t.coro.send(None)
        else:
            t.data = None
            t.coro.throw(exc)
    except (core.CancelledError, Exception) as er:
        assert t.data is None
        awaited = t is _main
        if awaited:
            core.cur_task = None
            if not isinstance(er, StopIteration):
                t.state = False
                raise er
            if t.state is None:
                t.state = False
        if t.state:
            if t.state is True:
                t.state = False if awaited else None
            elif callable(t.state):
                t.state(t, er)
                t.state = False
                awaited = True
            else:
                while t.state.peek():
                    core._task_queue.push(t.state.pop())
                    awaited = True
                t.state = False
            if not awaited and not isinstance(er, (core.CancelledError, StopIteration)):
                core._task_queue.push(t)
            t.data = er
        elif t.state is None:
            t.data = exc
            raise er
        if t is _main:
            return False
    return True
