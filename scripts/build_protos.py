"""Generate Python, mypy stubs and a descriptor set from protos/ into build/.

Generated code is never committed: `make protos` runs this, and a `.pth` file in the
virtualenv puts `build/gen` on the import path so `import pendulumpay.quote.v1` works.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "build" / "gen"
DESCRIPTORS = ROOT / "build" / "descriptors.pb"
BIN = Path(sys.executable).parent  # the virtualenv's scripts, where mypy-protobuf's plugins live


def _include_dirs() -> list[str]:
    """Proto include roots: ours, googleapis-common-protos' and protobuf's well-known types."""
    dirs = [str(PROTOS), str(Path(grpc_tools.__file__).parent / "_proto")]
    for sp in site.getsitepackages():
        if (Path(sp) / "google" / "api" / "annotations.proto").exists():
            dirs.append(sp)
            break
    else:
        sys.exit("google/api/annotations.proto not found: is googleapis-common-protos installed?")
    return dirs


def main() -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    GEN.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={GEN}",
        f"--mypy_grpc_out={GEN}",
        f"--descriptor_set_out={DESCRIPTORS}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for pkg_dir in {p.parent for p in GEN.rglob("*_pb2.py")}:
        while pkg_dir != GEN:  # make every generated folder a regular package
            (pkg_dir / "__init__.py").touch()
            pkg_dir = pkg_dir.parent
    pth = Path(site.getsitepackages()[0]) / "pendulumpay_generated.pth"
    pth.write_text(f"{GEN}\n")
    sys.path.insert(0, str(Path(__file__).parent))
    from gen_openapi import generate

    generate(DESCRIPTORS, ROOT / "build" / "openapi.json")
    print(f"generated {len(sources)} proto file(s) and the OpenAPI document into build/")


if __name__ == "__main__":
    main()
