"""Do the carried wheels (.whl) and the GPU image's packages together meet every requirement of the wheels?

    python scripts/gpu_requirements.py --wheels .whl                 # here: against the image's package list
    python scripts/gpu_requirements.py --installed .whl --out F.json  # there, after installing: exact versions

Why our own: pip resolves nothing with `--no-index --no-deps --target` (how wheels are installed there), and a
missing dependency would only show as an ImportError minutes into the device's time. Here the image's packages
are known by name (the device README's list, versions where a session read them); there by importlib.metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

# The device image's Python packages (/work/.library/device/KINDS.md, read 2026-11-17), with the versions one
# session's pip list showed; None: present, version unknown (assumed to fit, checked there).
IMAGE = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "sentencepiece": "0.2.2",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
    **dict.fromkeys(
        [
            "aiohttp",
            "anyio",
            "certifi",
            "charset-normalizer",
            "click",
            "einops",
            "filelock",
            "fsspec",
            "h11",
            "hf-xet",
            "httpcore",
            "httpx",
            "idna",
            "jinja2",
            "markupsafe",
            "matplotlib",
            "msgpack",
            "ninja",
            "nvidia-ml-py",
            "packaging",
            "pandas",
            "peft",
            "pillow",
            "psutil",
            "py-cpuinfo",
            "pyarrow",
            "pygments",
            "pytest",
            "pytest-xdist",
            "python-dateutil",
            "pyyaml",
            "regex",
            "requests",
            "rich",
            "setuptools",
            "six",
            "tqdm",
            "typer",
            "typing-extensions",
            "urllib3",
            "wheel",
            "xxhash",
        ]
    ),
}
ENVIRONMENT = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}


def wheel_requirements(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(name).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(ENVIRONMENT)]


def check_here(wheels: Path) -> list[str]:
    carried: dict[str, Version] = {}
    for w in sorted(wheels.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(w.name)
        if name in carried:
            return [f"two wheels of {name} in {wheels}: keep one (pip stops the whole install otherwise)"]
        carried[name] = version
    problems = []
    for w in sorted(wheels.glob("*.whl")):
        for req in wheel_requirements(w):
            name = canonicalize_name(req.name)
            if name in carried:
                ok, found = req.specifier.contains(carried[name], prereleases=True), f"wheel {carried[name]}"
            elif name in IMAGE:
                known = IMAGE[name]
                ok = known is None or req.specifier.contains(known, prereleases=True)
                found = f"image {known or '(version unknown: checked there)'}"
            else:
                ok, found = False, "nowhere"
            if not ok:
                problems.append(f"{w.name}: needs {req}, found {found}")
    print(f"{len(carried)} wheels; every requirement met by a wheel or the image" if not problems else "")
    return problems


def check_there(wheels: Path, out: Path | None) -> list[str]:
    problems, versions = [], {}
    for w in sorted(wheels.glob("*.whl")):
        for req in wheel_requirements(w):
            try:
                found = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{w.name}: needs {req}, not installed")
                continue
            versions[canonicalize_name(req.name)] = found
            if not req.specifier.contains(found, prereleases=True):
                problems.append(f"{w.name}: needs {req}, found {found}")
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if out:
        out.write_text(json.dumps({"versions": versions, "problems": problems}, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: versions[k]
                for k in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")
            }
        )
    )
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", type=Path, help="check the wheels against the image's package list (here)")
    p.add_argument("--installed", type=Path, help="check the installed versions (there); the wheels' folder")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not (args.wheels or args.installed):
        p.error("give --wheels DIR or --installed DIR")
    problems = check_here(args.wheels) if args.wheels else check_there(args.installed, args.out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
