"""Atomic operations on an int64 array element, for Numba kernels whose threads wait for each other
without leaving the parallel region (the hidden split's persistent team, the floor's hand-off
measurement). Numba has no atomics of its own on the CPU; these are llvmlite's instructions in
``@intrinsic`` functions. A plain load in a spin loop would be hoisted out of it: every poll must
be an atomic load.

    load_acquire(a, i)             a[i], acquire order
    store_release(a, i, v)         a[i] = v, release order
    fetch_add(a, i, v)             a[i] += v, returns the old value (sequentially consistent)
    compare_swap(a, i, old, new)   a[i] = new if a[i] == old; True if it did (sequentially consistent)
    spin_pause()                   tell the core this thread is spinning (x86 ``pause``)
    sched_yield()                  let another thread have this core

``i`` is not bounds-checked.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _slot(context, builder, sig, args):
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]], wraparound=False)


def _value(context, builder, sig, args, k):
    return context.cast(builder, args[k], sig.args[k], sig.args[0].dtype)


@intrinsic
def load_acquire(typingctx, a, i):
    """a[i], an atomic load with acquire order."""
    return a.dtype(a, i), lambda c, b, sig, args: b.load_atomic(_slot(c, b, sig, args), "acquire", 8)


@intrinsic
def store_release(typingctx, a, i, value):
    """a[i] = value, an atomic store with release order."""

    def codegen(context, builder, sig, args):
        builder.store_atomic(_value(context, builder, sig, args, 2), _slot(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(a, i, value), codegen


@intrinsic
def fetch_add(typingctx, a, i, value):
    """a[i] += value atomically; returns the value before."""

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), _value(context, builder, sig, args, 2), "seq_cst")

    return a.dtype(a, i, value), codegen


@intrinsic
def compare_swap(typingctx, a, i, old, new):
    """a[i] = new if a[i] == old, atomically; True where it stored."""

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig, args)
        expected, wanted = _value(context, builder, sig, args, 2), _value(context, builder, sig, args, 3)
        pair = builder.cmpxchg(ptr, expected, wanted, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(a, i, old, new), codegen


@intrinsic
def spin_pause(typingctx):
    """x86's ``pause`` (elsewhere nothing), for the body of a spin loop: it keeps the spinning thread
    from flooding the core with loads its SMT sibling could use, and from the memory-order
    mis-speculation when the awaited store arrives."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


#: ``sched_yield()`` (POSIX), called from a kernel: a waiting thread gives up its core to another
#: runnable thread -- maybe the one it waits for, placed on the same core by a busy machine's
#: scheduler. A symbol, resolved when the code is loaded, so a kernel calling it still caches.
sched_yield = types.ExternalFunction("sched_yield", types.int32())
