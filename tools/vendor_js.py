"""The browser libraries the website serves itself, copied from pinned npm packages.

Every chapter page needs three JavaScript libraries: RequireJS (the module loader the widget
manager is written for), the ipywidgets HTML manager (it draws the saved widgets without a
kernel) and MathJax (it typesets the formulas).  Jupyter Book would load them from three CDNs;
the site serves its own copies instead, so a page makes no request to another server.

The copies are committed under ``book/_static/vendor`` (one folder per package and version),
so building the site needs neither node nor a second registry, and works offline.  This tool
writes them: it downloads each package's tarball from the npm registry, refuses it unless its
SHA-512 matches the integrity recorded below (the value ``npm view PACKAGE@VERSION
dist.integrity`` prints), and copies only the files a page can ask for.  It also writes
``MANIFEST.json`` with the SHA-256 of every copied file; the tests compare the folder with it.

    python -m tools.vendor_js           # (re)write book/_static/vendor
    python -m tools.vendor_js --check   # download again and compare, change nothing

To move to another version, change ``version``, ``integrity`` and ``folder`` of the package
below, run the tool, and update the paths in ``_config.yml`` (``mathjax_path``,
``nb_ipywidgets_js``).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Package", "PACKAGES", "VENDOR", "select_files", "verify_integrity", "write_package",
           "manifest_problems"]

VENDOR = Path("book") / "_static" / "vendor"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str           # npm name, with its scope
    version: str        # exact version
    integrity: str      # npm's dist.integrity of the tarball ("sha512-<base64>")
    folder: str         # folder under book/_static/vendor
    root: str           # folder inside the tarball whose layout is kept ("package/dist")
    files: tuple        # glob patterns relative to ``root``

    @property
    def tarball(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = (
    # RequireJS: the page asks for it first; the widget manager is a set of AMD modules.  npm
    # ships it unminified (85 kB, 25 kB compressed on the wire).
    Package("requirejs", "2.3.4",
            "sha512-qPD5gRrj6kGQ0ZySAJgqbArkaDqPMbQIT0zSZDkIv1mfA17w/tR2Faq5l2qqRf2CdQx6FWln9nUrgd2UDzb19A==",
            "requirejs-2.3.4", "package", ("require.js",)),
    # The ipywidgets 8 HTML manager (the version MyST-NB 1.4 asks for).  embed-amd.js holds the
    # whole library; the fonts are Font Awesome's, for icons on buttons: woff2 is what every
    # current browser takes, woff the fallback.
    Package("@jupyter-widgets/html-manager", "1.0.6",
            "sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
            "html-manager-1.0.6", "package",
            ("LICENSE", "dist/embed-amd.js", "dist/embed.js.LICENSE.txt", "dist/*.woff2",
             "dist/*.woff")),
    # MathJax 3: Sphinx 7.4's default mathjax_path is jsDelivr's mathjax@3 (3.2.2 is the last 3.x
    # release).  The combined TeX/MathML/CommonHTML file, the fonts it draws with, the TeX
    # extensions it loads on demand (\boldsymbol, \color, ...), and what its menu's
    # accessibility items load (the explorer, with its English speech rules).
    Package("mathjax", "3.2.2",
            "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
            "mathjax-3.2.2", "package",
            ("LICENSE", "es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/*.woff",
             "es5/input/tex/extensions/*.js", "es5/a11y/*.js",
             "es5/sre/mathmaps/base.json", "es5/sre/mathmaps/en.json")),
)

# MathJax finds its components next to the file that loaded it, so its es5/ folder must keep its
# layout; it is flattened into the package folder ("es5/a11y/x.js" -> "a11y/x.js").
STRIP = {"mathjax": "es5/", "@jupyter-widgets/html-manager": "dist/"}


def verify_integrity(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` has the SRI-style ``integrity`` ("sha512-<base64>")."""
    algo, _, expected = integrity.partition("-")
    if algo not in ("sha512", "sha384", "sha256"):
        raise ValueError(f"unsupported integrity {integrity!r}: give sha512-<base64>")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise ValueError(f"the tarball's {algo} is {actual}, not the pinned {expected}: "
                         "the registry served other bytes than the pinned version")


def select_files(tar: tarfile.TarFile, package: Package) -> dict[str, bytes]:
    """The files of ``package`` that the site serves: {path under its folder: bytes}.  Raises
    when a pattern matches nothing (a file renamed in the package must not go missing
    silently)."""
    members = {m.name: m for m in tar.getmembers() if m.isfile()}
    chosen: dict[str, bytes] = {}
    strip = STRIP.get(package.name, "")
    for pattern in package.files:
        full = f"{package.root}/{pattern}"
        # "*" stays inside one folder (fnmatch alone would let it cross "/")
        hits = sorted(n for n in members
                      if fnmatch.fnmatchcase(n, full) and n.count("/") == full.count("/"))
        if not hits:
            raise ValueError(f"{package.name}@{package.version}: nothing matches {pattern!r}")
        for name in hits:
            rel = name[len(package.root) + 1:]
            if strip and rel.startswith(strip):
                rel = rel[len(strip):]
            chosen[rel] = tar.extractfile(members[name]).read()
    return chosen


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def package_files(package: Package, data: bytes | None = None) -> dict[str, bytes]:
    """Download (or take ``data``), verify and select the files of ``package``."""
    data = _download(package.tarball) if data is None else data
    verify_integrity(data, package.integrity)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return select_files(tar, package)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_package(package: Package, files: dict[str, bytes], vendor: Path) -> dict:
    """Replace ``vendor/<folder>`` by ``files``; return the package's manifest entry."""
    target = vendor / package.folder
    if target.exists():
        shutil.rmtree(target)
    for rel, data in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {"name": package.name, "version": package.version, "tarball": package.tarball,
            "integrity": package.integrity,
            "files": {rel: _sha256(data) for rel, data in sorted(files.items())}}


def manifest_problems(vendor: Path, packages=PACKAGES) -> list[str]:
    """How ``vendor`` differs from its ``MANIFEST.json`` and from ``packages`` (empty: not at
    all): a package of another version, a file missing, changed or not listed."""
    manifest_path = vendor / "MANIFEST.json"
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing: run python -m tools.vendor_js"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    listed = set()
    for package in packages:
        entry = manifest.get(package.folder)
        if entry is None:
            problems.append(f"{package.folder}: not in the manifest")
            continue
        for key in ("name", "version", "integrity"):
            if entry.get(key) != getattr(package, key):
                problems.append(f"{package.folder}: manifest {key} {entry.get(key)!r}, pinned "
                                f"{getattr(package, key)!r}")
        for rel, digest in entry["files"].items():
            path = vendor / package.folder / rel
            listed.add(path)
            if not path.is_file():
                problems.append(f"{package.folder}/{rel}: missing")
            elif _sha256(path.read_bytes()) != digest:
                problems.append(f"{package.folder}/{rel}: changed since it was copied")
    extra = set(manifest) - {p.folder for p in packages}
    problems += [f"{folder}: in the manifest but not pinned" for folder in sorted(extra)]
    for path in sorted(p for p in vendor.rglob("*") if p.is_file()):
        if path != manifest_path and path not in listed:
            problems.append(f"{path.relative_to(vendor)}: not listed in the manifest")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.vendor_js",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="download the pinned packages and compare; change nothing")
    args = parser.parse_args(argv)
    if not (Path("_toc.yml").is_file() and Path("book").is_dir()):
        print("python -m tools.vendor_js: run it from the repository root", file=sys.stderr)
        return 2
    manifest = {}
    bad = 0
    for package in PACKAGES:
        files = package_files(package)
        size = sum(map(len, files.values()))
        if args.check:
            for rel, data in files.items():
                path = VENDOR / package.folder / rel
                if not path.is_file() or path.read_bytes() != data:
                    print(f"{package.folder}/{rel}: differs from {package.name}@{package.version}")
                    bad += 1
        else:
            manifest[package.folder] = write_package(package, files, VENDOR)
        print(f"{package.name}@{package.version}: {len(files)} files, {size / 1e6:.2f} MB")
    if args.check:
        problems = manifest_problems(VENDOR)
        for problem in problems:
            print(problem)
        bad += len(problems)
        print(f"{bad} problem(s)")
        return 1 if bad else 0
    (VENDOR / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
