"""One home per kernel: each concept of plantseek.kernels is one family of files (docs/native.md, "Adding a kernel").

A newcomer adding a kernel touches its concept module (dispatcher + reference), its C++ binding file and its
test file; these checks fail when a piece is missing or lives elsewhere: a dispatcher without a reference, a
binding file CMake does not build or module.cpp does not call, a binding that its concept module does not use,
a concept without tests on the `backend` fixture.
"""
import importlib
import inspect
import re
from pathlib import Path

import pytest

from plantseek import kernels

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "plantseek" / "kernels"
CMAKE = (ROOT / "CMakeLists.txt").read_text()
SHARED = {"__init__", "checks"}  # the package and its argument checks are not concepts
# pybind11 functions that are called from outside their concept module, and why
ELSEWHERE = {
    "padded_batch": "only the tests use it: kernels.sparse_linear.padded_batch is its Python twin",
    "device_count": "module-level helper of plantseek._C_cuda, no concept",
}


def _bound_names(source: str) -> set[str]:
    """Names a binding file gives Python: m.def("name", ...) and py::class_<T>(m, "Name", ...)."""
    return set(re.findall(r'm\.def\("(\w+)"', source)) | set(re.findall(r'py::class_<\w+>\(m, "(\w+)"', source))


def test_the_concepts_are_the_modules_of_the_package():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - SHARED
    assert modules == set(kernels.CONCEPTS)
    assert {p.stem for p in (ROOT / "tests" / "kernels").glob("test_*.py")} >= {f"test_{c}" for c in kernels.CONCEPTS}


@pytest.mark.parametrize("concept", kernels.CONCEPTS)
def test_every_dispatcher_has_its_reference_beside_it(concept):
    module = importlib.import_module(f"plantseek.kernels.{concept}")
    assert module.KERNELS, f"{concept}: KERNELS names no dispatcher"
    for dispatcher, reference in module.KERNELS.items():
        for name in (dispatcher, reference):
            obj = getattr(module, name, None)
            assert callable(obj), f"plantseek.kernels.{concept}.{name} is missing"
            assert inspect.getmodule(obj) is module, f"{concept}.{name} is defined in {inspect.getmodule(obj)}"
    doc = module.__doc__
    assert f"csrc/bindings/{concept}.cpp" in doc and f"tests/kernels/test_{concept}.py" in doc, \
        f"the docstring of plantseek.kernels.{concept} names its C++ bindings and its tests"


@pytest.mark.parametrize("concept", kernels.CONCEPTS)
def test_every_concept_has_one_binding_file_that_is_built_and_called(concept):
    binding = ROOT / "csrc" / "bindings" / f"{concept}.cpp"
    source = binding.read_text()
    assert f"void plantseek::bindings::bind_{concept}(py::module_& m)" in source
    assert f"void bind_{concept}(pybind11::module_& m);" in (ROOT / "csrc" / "bindings" / "module.h").read_text()
    assert f"plantseek::bindings::bind_{concept}(m);" in (ROOT / "csrc" / "bindings" / "module.cpp").read_text()
    assert f"csrc/bindings/{concept}.cpp" in CMAKE and f"csrc/{concept}.cpp" in CMAKE
    assert (ROOT / "csrc" / f"{concept}.h").exists()


@pytest.mark.parametrize("folder", ["csrc/bindings", "csrc/cuda/bindings"])
def test_every_binding_file_is_listed_in_cmake(folder):
    files = sorted((ROOT / folder).glob("*.cpp"))
    assert files
    for path in files:
        assert f"{folder}/{path.name}" in CMAKE, f"{folder}/{path.name} is not built (CMakeLists.txt)"
    concepts = {p.stem for p in files} - {"module"}
    assert concepts <= set(kernels.CONCEPTS), f"{folder} binds something that is not a concept: {concepts}"


@pytest.mark.parametrize("folder", ["csrc/bindings", "csrc/cuda/bindings"])
def test_each_binding_is_used_by_its_concept_module(folder):
    for path in sorted((ROOT / folder).glob("*.cpp")):
        if path.stem == "module":
            names = _bound_names(path.read_text())
            assert names <= set(ELSEWHERE), f"{path.name} binds {names - set(ELSEWHERE)} outside a concept"
            continue
        python = (PACKAGE / f"{path.stem}.py").read_text()
        for name in sorted(_bound_names(path.read_text())):
            if name in ELSEWHERE:
                continue
            assert re.search(rf"\.{name}\(", python), \
                f"{folder}/{path.name} binds {name}, which plantseek/kernels/{path.stem}.py does not call"


@pytest.mark.parametrize("concept", kernels.CONCEPTS)
def test_every_concept_is_tested_on_the_backends(concept):
    module = importlib.import_module(f"plantseek.kernels.{concept}")
    tests = (ROOT / "tests" / "kernels" / f"test_{concept}.py").read_text()
    assert f"plantseek.kernels import {concept}" in tests or f"plantseek.kernels.{concept} import" in tests
    assert re.search(r"def test_\w+\(backend\b", tests), f"test_{concept}.py runs nothing on the backend fixture"
    for dispatcher, reference in module.KERNELS.items():
        assert dispatcher in tests and reference in tests, f"test_{concept}.py compares {dispatcher} with {reference}"
