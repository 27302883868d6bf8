"""cffi (API mode) build of the C kernels into `runners.backends._bnc`.

setup.py calls this during `pip install`; no compiler runs at test time. Flags: -O3 for the
architecture's baseline (a wheel built here runs on any x86-64: bnc.c compiles its kernels again
for AVX2 and AVX-512 and picks the widest the CPU has at run time), OpenMP when the compiler
has it (BNC_OPENMP=0 turns it off), -std=c99.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _cdef() -> str:
    """The declarations of bnc.h without preprocessor lines (cffi's cdef takes plain C)."""
    lines = []
    for line in (HERE / "bnc.h").read_text().splitlines():
        if line.startswith("#define BN_"):
            name, value = line.split()[1:3]
            lines.append(f"#define {name} {value}")
        elif not line.startswith("#"):
            lines.append(line)
    return re.sub(r"/\*.*?\*/", "", "\n".join(lines), flags=re.S)  # cdef takes no comments


def builder(openmp: bool | None = None) -> FFI:
    if openmp is None:
        openmp = os.environ.get("BNC_OPENMP", "1") != "0"
    ffi = FFI()
    ffi.cdef(_cdef())
    flags = ["-std=c99", "-O3"] + (["-fopenmp"] if openmp else [])
    here = os.path.relpath(HERE)  # setuptools wants paths relative to setup.py's directory
    ffi.set_source(
        "bnconform.runners.backends._bnc",
        '#include "bnc.h"',
        sources=[os.path.join(here, "bnc.c")],
        depends=[os.path.join(here, n) for n in ("bnc.h", "bnc_impl.h", "bnc_isa.h")],
        include_dirs=[here],
        extra_compile_args=flags,
        extra_link_args=["-fopenmp"] if openmp else [],
        libraries=["m"],
    )
    return ffi


ffibuilder = builder()

if __name__ == "__main__":  # manual build for development: python runners/backends/c/build_bnc.py
    # ffi.compile names the module after this interpreter (_bnc.cpython-3XX-....so), a name that
    # imports ahead of the _bnc.abi3.so `pip install -e .` builds: put the result in that file instead.
    built = Path(ffibuilder.compile(tmpdir=str(HERE.parent.parent.parent), verbose=True))
    target = HERE.parent / "_bnc.abi3.so"
    if built.resolve() != target.resolve():
        os.replace(built, target)
    for leftover in (HERE.parent / "_bnc.o", HERE / "bnc.o"):
        leftover.unlink(missing_ok=True)
    print(f"built {target}")
