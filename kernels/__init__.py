"""Triton kernels (one file per op: kernel, launcher, torch reference) and the processor swap
(`emo_rt.kernels.processors.select_attention`). Installed as `emo_rt.kernels`.

From the repository root (`python -m ...`, the test suite) this folder is also importable as a
top-level `kernels`, the name of Hugging Face's `kernels` package, which transformers (>= 5.25
depends on it) and diffusers import when its distribution is installed. Imported under that name,
this file puts the installed distribution in its place, so the libraries get the package they asked
for; without one, `import kernels` fails as it would outside the repository.
"""

if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != _repository]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _elsewhere)
    if _spec is None or _spec.loader is None:
        raise ImportError("no 'kernels' package is installed (the repository's kernels/ is emo_rt.kernels)")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds after this runs
    _spec.loader.exec_module(_module)
