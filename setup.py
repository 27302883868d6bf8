"""Build step for the C backend: compiles runners/backends/c into bnconform.runners.backends._bnc (cffi).

Everything else about the package is in pyproject.toml. The extension is optional: without a
working compiler the install still succeeds and the `cffi` backend skips its cases, saying why.
"""
from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C backend cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers...
            self.warn(f"bnconform: C backend not built ({exc}); the cffi backend will be skipped")

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"bnconform: C backend not built ({exc}); the cffi backend will be skipped")


setup(
    cffi_modules=["runners/backends/c/build_bnc.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
