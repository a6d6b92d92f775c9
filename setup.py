"""Build effnet_kernels._C with CMake + Ninja (the one build description is CMakeLists.txt).

`pip install .` runs this in an isolated build environment that has pybind11, cmake and ninja from
pip and no torch. Environment knobs: EFFNET_BUILD_TYPE (Release), EFFNET_CMAKE_ARGS (extra args),
CMAKE_BUILD_PARALLEL_LEVEL (jobs).
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cmake_args = [
            "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('EFFNET_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_path.parent}",
            "-DEFFNET_BUILD_PYTHON=ON",
            "-DEFFNET_BUILD_TESTS=OFF",
            # Stated on every configure: the CMake cache in build_temp is shared between builds, and a
            # sanitized one (scripts/sanitize.sh: EFFNET_CMAKE_ARGS=-DEFFNET_SANITIZE=ON) must not stick.
            "-DEFFNET_SANITIZE=OFF",
        ]
        try:  # Ninja from the pip package, when the build environment has it.
            import ninja

            cmake_args.append(f"-DCMAKE_MAKE_PROGRAM={Path(ninja.BIN_DIR) / 'ninja'}")
        except ImportError:
            pass
        cmake_args += shlex.split(os.environ.get("EFFNET_CMAKE_ARGS", ""))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *cmake_args], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_C"], check=True)
        built = list(out_path.parent.glob("_C*.so")) + list(out_path.parent.glob("_C*.pyd"))
        if not built:
            raise RuntimeError(f"CMake finished but no _C module was found in {out_path.parent}")
        if built[0].resolve() != out_path:
            built[0].replace(out_path)


class CleanBuildPy(build_py):
    """build_py into a fresh copy of the package: setuptools keeps build/lib* between builds, and a module
    that was moved or deleted since the last build (e.g. ops.py -> ops/) would otherwise ship in the wheel
    again, importable beside its replacement."""

    def run(self) -> None:
        import shutil

        for p in sorted((Path(self.build_lib) / "effnet_kernels").glob("**/*"), reverse=True):
            if p.name.startswith("_C") and p.parent.name == "effnet_kernels":
                continue  # the compiled module, should build_ext have run first
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
        super().run()


setup(ext_modules=[CMakeExtension("effnet_kernels._C")], cmdclass={"build_ext": CMakeBuild, "build_py": CleanBuildPy})
