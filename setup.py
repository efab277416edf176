"""Build hook: a wheel carries the presets and the toy world's weights inside the package (see pixgen/shipped.py).

Everything else is declared in pyproject.toml. An editable install needs no copy: it reads the checkout's folders.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# what pixgen/shipped.py finds under pixgen/_data/ when installed; the toy training logs stay in the checkout
SHIPPED = {"configs": ("*.yaml",),
           "checkpoints/toy": ("*.pt", "*.ckpt", "*.yaml", "*.safetensors", "*.json")}


class BuildPyWithShippedData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for folder, patterns in SHIPPED.items():
            target = Path(self.build_lib) / "pixgen" / "_data" / folder
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for source in sorted((root / folder).glob(pattern)):
                    shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithShippedData})
