"""Builds the one compiled module (the request reader, src/slipstream/schemas/_request_rows.pyx).

Everything else is in pyproject.toml. The module is optional: where no C compiler is found
the build goes on without it and the codec's fastavro path reads every message.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "slipstream.schemas._request_rows",
                ["src/slipstream/schemas/_request_rows.pyx"],
                optional=True,
            )
        ],
        compiler_directives={"language_level": "3"},
    )
)
