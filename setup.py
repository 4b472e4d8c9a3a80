"""Package list of the aios-grpc distribution (the rest of its metadata is in pyproject.toml).

Besides ``aios_grpc`` and its subpackages, the wheel carries the contract: ``protos/`` is
installed as ``aios_grpc.protos`` (``importlib.resources.files("aios_grpc.protos")``), so a
user has the ``.proto`` files of the version they run, e.g. for ``grpcurl -import-path``.
pyproject.toml cannot map a folder outside the package into it next to a package search.
"""

from setuptools import find_packages, setup

PROTOS = ["aios_grpc.protos", "aios_grpc.protos.aios", "aios_grpc.protos.aios.block", "aios_grpc.protos.aios.block.v1"]

setup(
    packages=[*find_packages(include=["aios_grpc", "aios_grpc.*"]), *PROTOS],
    package_dir={"aios_grpc.protos": "protos"},
)
